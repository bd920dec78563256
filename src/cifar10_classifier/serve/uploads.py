"""Request bodies: read with a byte limit enforced while streaming, and multipart/form-data parsed in memory.

Starlette's form parser puts no cap on a file part and spools big parts to temporary files. We read the body
ourselves instead: a Content-Length over the limit is refused before a byte is read, a body that streams past
the limit is refused as soon as it crosses it, nothing ever touches the disk, and a small in-memory parser splits
the parts with a few `bytes.find` calls (C speed) instead of a per-byte state machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from cifar10_classifier.serve.errors import ApiError

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class FilePart:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


def upload_too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"the request body is over the limit of {limit:,} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise upload_too_large(limit)
        except ValueError:
            raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:  # chunked bodies have no Content-Length: count as they arrive
                raise upload_too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "the client closed the connection before the body was complete") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """`multipart/form-data; boundary="x"` -> ("multipart/form-data", {"boundary": "x"})."""
    main, separator, _ = value.partition(";")
    params = {}
    if separator:
        for name, raw in _PARAM.findall(value, len(main)):
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = raw[1:-1]
                if "\\" in raw:
                    raw = _ESCAPE.sub(r"\1", raw)
            params[name.lower()] = raw
    return main.strip().lower(), params


def media_type_of(request: Request) -> tuple[str, dict[str, str]]:
    return parse_header_value(request.headers.get("content-type", ""))


def require_multipart(request: Request) -> str:
    """The boundary of a multipart/form-data request, or 415 saying what to send instead."""
    media_type, params = media_type_of(request)
    if media_type != "multipart/form-data":
        got = media_type or "no content type"
        raise ApiError(
            415, "unsupported_media_type", f'send the image as multipart/form-data with a field "file" (got {got})'
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise ApiError(400, "malformed_multipart", "the multipart/form-data content type has no valid boundary")
    return boundary


def parse_multipart(body: bytes, boundary: str, max_parts: int = 256) -> list[FilePart]:
    """RFC 7578 multipart/form-data body -> its parts, in order."""
    delimiter = b"--" + boundary.encode("latin-1")
    next_delimiter = b"\r\n" + delimiter
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble before the first delimiter is allowed and ignored
        found = body.find(next_delimiter)
        if found < 0:
            raise _malformed("the body does not contain the boundary")
        position = found + len(next_delimiter)
    parts: list[FilePart] = []
    while True:
        if body.startswith(b"--", position):  # the close delimiter
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise _malformed("a boundary line is malformed")
        headers_end = body.find(b"\r\n\r\n", line_end)
        if headers_end < 0:
            raise _malformed("a part has no end of headers: the body is truncated")
        data_end = body.find(next_delimiter, headers_end + 4)
        if data_end < 0:
            raise _malformed("a part has no closing boundary: the body is truncated")
        if len(parts) >= max_parts:
            raise ApiError(413, "too_many_parts", f"the form has more than {max_parts} parts")
        parts.append(_part(body[line_end + 2 : headers_end], body[headers_end + 4 : data_end]))
        position = data_end + len(next_delimiter)


def _part(header_block: bytes, data: bytes) -> FilePart:
    disposition = content_type = None
    for line in header_block.split(b"\r\n") if header_block else ():
        name, separator, value = line.partition(b":")
        if not separator:
            raise _malformed("a part header has no colon")
        name = name.strip().lower()
        if name == b"content-disposition":
            # Browsers send file names as raw UTF-8; never fail on them, never trust them.
            disposition = value.decode("utf-8", "replace")
        elif name == b"content-type":
            content_type = value.decode("latin-1").strip()
    if disposition is None:
        raise _malformed("a part has no Content-Disposition header")
    kind, params = parse_header_value(disposition)
    if kind != "form-data" or "name" not in params:
        raise _malformed("a part's Content-Disposition is not form-data with a name")
    return FilePart(params["name"], params.get("filename"), content_type, data)


def _malformed(message: str) -> ApiError:
    return ApiError(400, "malformed_multipart", message)


async def read_files(request: Request, fields: tuple[str, ...], limit: int, max_files: int) -> list[FilePart]:
    """The parts of a multipart upload named in `fields`, in order; 415/413/400/422 errors as the API promises."""
    boundary = require_multipart(request)
    body = await read_body(request, limit)
    parts = [part for part in parse_multipart(body, boundary) if part.field in fields]
    if not parts:
        wanted = " or ".join(f'"{field}"' for field in fields)
        raise ApiError(422, "missing_file", f"no file: send the image as multipart/form-data field {wanted}")
    if len(parts) > max_files:
        raise ApiError(413, "too_many_files", f"{len(parts)} files in one request; the limit is {max_files}")
    return parts

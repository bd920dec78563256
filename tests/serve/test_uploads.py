"""The in-memory multipart parser: agrees with what real clients send, refuses what is malformed."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cifar10_classifier.serve.errors import ApiError
from cifar10_classifier.serve.uploads import parse_header_value, parse_multipart


def encoded_by_httpx(fields: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/", files=fields)
    _, params = parse_header_value(request.headers["content-type"])
    return request.read(), params["boundary"]


field_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\%'), min_size=1)
file_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters='"\\\r\n%'), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(field_names, file_names, st.binary(max_size=300)), min_size=1, max_size=5))
def test_any_form_httpx_builds_parses_back_to_the_same_parts(parts):
    body, boundary = encoded_by_httpx([(name, (filename or "f", data, "image/png")) for name, filename, data in parts])
    parsed = parse_multipart(body, boundary)
    assert [(part.field, part.data) for part in parsed] == [(name, data) for name, _, data in parts]
    assert all(part.content_type == "image/png" for part in parsed)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_data_containing_dashes_and_crlf_is_kept_exactly(data):
    payload = b"--\r\n--x" + data + b"\r\n-"
    body, boundary = encoded_by_httpx([("file", ("a.bin", payload, "application/octet-stream"))])
    assert parse_multipart(body, boundary)[0].data == payload


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(body):
    try:
        parse_multipart(body, "boundary")
    except ApiError as error:
        assert error.status in (400, 413)


def test_preamble_epilogue_quoted_boundary_and_file_name():
    body = (
        b"preamble to ignore\r\n--a'b c\r\n"
        b'Content-Disposition: form-data; name="file"; filename="caf\xc3\xa9 \\"1\\".png"\r\n'
        b"Content-Type: image/png\r\n\r\nDATA\r\n--a'b c--\r\nepilogue"
    )
    media_type, params = parse_header_value('Multipart/Form-Data; boundary="a\'b c"')
    assert media_type == "multipart/form-data" and params["boundary"] == "a'b c"
    [part] = parse_multipart(body, params["boundary"])
    assert (part.field, part.filename, part.data) == ("file", 'café "1".png', b"DATA")


@pytest.mark.parametrize(
    "body",
    [
        b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nno end',
        b'--B\r\nContent-Disposition: form-data; name="file"',
        b"--B\r\nX-Nothing: here\r\n\r\ndata\r\n--B--",
        b'--B\r\nContent-Disposition: attachment; name="file"\r\n\r\ndata\r\n--B--',
        b"--B\r\nbroken header line\r\n\r\ndata\r\n--B--",
        b"--Bjunk\r\n\r\n",
    ],
    ids=["unterminated", "headers-cut", "no-disposition", "not-form-data", "no-colon", "junk-after-boundary"],
)
def test_malformed_bodies_are_400(body):
    with pytest.raises(ApiError) as raised:
        parse_multipart(body, "B")
    assert raised.value.status == 400 and raised.value.code == "malformed_multipart"


def test_too_many_parts_is_413():
    body = b"".join(b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' for _ in range(5)) + b"--B--"
    with pytest.raises(ApiError) as raised:
        parse_multipart(body, "B", max_parts=3)
    assert raised.value.status == 413

"""One error shape for every failure: `{"error": {"code": "...", "message": "..."}}` with the right status.

Routes raise `ApiError`; Starlette's own 404/405 and FastAPI's validation errors are rewritten into the same shape,
so a client needs one parser for every answer that is not a success.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from cifar10_classifier.preprocess import ImageDecodeError


class JSONBytesResponse(JSONResponse):
    """JSON via orjson: several times faster than the standard library on the hot path, and numpy-aware."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)

    def response(self) -> Response:
        return JSONBytesResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# A decode failure's kind -> (status, code). Not-an-image is a media-type problem (415); a file that claims to be
# an image but does not decode is unprocessable content (422); a decompression bomb is too large (413).
_DECODE_ERRORS = {
    "not_image": (415, "not_image"),
    "corrupt": (422, "corrupt_image"),
    "too_large": (413, "image_too_large"),
}


def from_decode_error(error: ImageDecodeError) -> ApiError:
    status, code = _DECODE_ERRORS.get(error.kind, (422, "corrupt_image"))
    return ApiError(status, code, str(error))


def model_unavailable(message: str) -> ApiError:
    return ApiError(503, "model_unavailable", message)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def code_for_status(status: int) -> str:
    return _HTTP_CODES.get(status, "error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            message = f"no route {request.url.path}"
        elif error.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        return JSONBytesResponse(
            error_body(code_for_status(error.status_code), message),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', 'invalid')}"
            for item in error.errors()
        )
        return JSONBytesResponse(error_body("invalid_request", problems or "invalid request"), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        # Starlette re-raises after this answer, so uvicorn logs the traceback for the operator once; the client
        # gets no internals.
        return JSONBytesResponse(error_body("internal_error", "internal server error"), status_code=500)

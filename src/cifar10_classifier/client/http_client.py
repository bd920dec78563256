"""`Client`: POST /predict, POST /predict/batch and GET /readyz over httpx, with timeouts and bounded retries."""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import httpx

from cifar10_classifier.client.errors import (
    CONNECTION_FAILED,
    HTTP_ERROR,
    INVALID_RESPONSE,
    INVALID_URL,
    TIMEOUT,
    UNREADABLE_FILE,
    ClientError,
)
from cifar10_classifier.client.results import (
    FailedPrediction,
    Prediction,
    ResponseShapeError,
    failure_from_json,
    model_from_json,
    prediction_from_json,
)
from cifar10_classifier.client.retries import RetryPolicy, next_wait_s, retry_after_s

T = TypeVar("T")

# A path, the image's bytes, or a file object opened in binary mode.
ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

# Under the server's default 10 MiB body limit and 64 files per request, with room for the multipart framing.
DEFAULT_FILES_PER_REQUEST = 32
DEFAULT_BYTES_PER_REQUEST = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Upload:
    name: str
    data: bytes

    def multipart(self, field: str) -> tuple[str, tuple[str, bytes, str]]:
        content_type = mimetypes.guess_type(self.name)[0] or "application/octet-stream"
        return field, (self.name, self.data, content_type)


class Client:
    """One server, one pool of keep-alive connections; thread-safe (httpx's client is). Close it, or use it as a
    context manager, to release the connections early."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        files_per_request: int = DEFAULT_FILES_PER_REQUEST,
        bytes_per_request: int = DEFAULT_BYTES_PER_REQUEST,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`timeout_s` bounds each wait on the network (connect, send, each read), `connect_timeout_s` the connect
        alone; `retry` says how often and how long to retry 429 and 503; `predict_many` sends at most
        `files_per_request` files and (unless one file alone is bigger) `bytes_per_request` bytes per request.
        `headers` go with every request (a proxy's token, say); `sleep` and `transport` are for tests."""
        if files_per_request < 1 or bytes_per_request < 1:
            raise ValueError("files_per_request and bytes_per_request must be at least 1")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry or RetryPolicy()
        self.files_per_request = files_per_request
        self.bytes_per_request = bytes_per_request
        self._sleep = sleep
        try:
            self._http = httpx.Client(
                base_url=self.url,
                timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
                headers=dict(headers or {}),
                transport=transport,
            )
        except httpx.InvalidURL as error:
            raise ClientError(
                f"{url!r} is not a server address ({error}); give one like http://host:8000", code=INVALID_URL
            ) from error

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        """True once the server has its model loaded and warm; False while it loads or when it has none. Not
        retried: a readiness probe asks about now. A server that cannot be reached raises ClientError."""
        response = self._send("GET", "/readyz", retry=False)
        if response.status_code == 503:
            return False
        self._json(response)  # anything but 200 raises the server's error
        return True

    def predict(self, image: ImageInput, *, top_k: int | None = None) -> Prediction:
        """One image -> its prediction; `top_k` None takes the server's default (3)."""
        try:
            upload = _read(image)
        except OSError as error:
            raise ClientError(f"{_describe(image)}: {_reason(error)}", code=UNREADABLE_FILE) from error
        response = self._send("POST", "/predict", params=_top_k_param(top_k), files=[upload.multipart("file")])
        body = self._json(response)
        return self._parsed(response, lambda: prediction_from_json(body))

    def predict_many(
        self, images: Iterable[ImageInput], *, top_k: int | None = None
    ) -> list[Prediction | FailedPrediction]:
        """One entry per image, in order: its prediction, or a FailedPrediction for it alone (a file that is not
        an image, one the client cannot read, one over the server's upload limit by itself). The images go to
        /predict/batch in requests of at most `files_per_request` files and `bytes_per_request` bytes, split
        further when the server answers 413; any other error that fails a whole request raises ClientError."""
        if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike) or hasattr(images, "read"):
            raise TypeError("predict_many takes several images (a list, say); predict takes one")
        results: list[Prediction | FailedPrediction | None] = []
        pending: list[tuple[int, _Upload]] = []
        pending_bytes = 0
        for image in images:
            try:
                upload = _read(image)
            except OSError as error:
                results.append(FailedPrediction(UNREADABLE_FILE, _reason(error)))
                continue
            full = len(pending) >= self.files_per_request or pending_bytes + len(upload.data) > self.bytes_per_request
            if pending and full:
                self._predict_batch(pending, top_k, results)
                pending, pending_bytes = [], 0
            pending.append((len(results), upload))
            pending_bytes += len(upload.data)
            results.append(None)  # filled in when its request is answered
        if pending:
            self._predict_batch(pending, top_k, results)
        return [result for result in results if result is not None]

    def _predict_batch(
        self,
        pending: list[tuple[int, _Upload]],
        top_k: int | None,
        results: list[Prediction | FailedPrediction | None],
    ) -> None:
        files = [upload.multipart("files") for _, upload in pending]
        response = self._send("POST", "/predict/batch", params=_top_k_param(top_k), files=files)
        if response.status_code == 413:
            # Over the server's body or file-count limit, which may be below ours: halve until the request fits;
            # a file over the limit by itself is that file's failure.
            if len(pending) == 1:
                error = self._error(response)
                results[pending[0][0]] = FailedPrediction(error.code, error.message)
            else:
                half = len(pending) // 2
                self._predict_batch(pending[:half], top_k, results)
                self._predict_batch(pending[half:], top_k, results)
            return
        body = self._json(response)

        def entries() -> list[Prediction | FailedPrediction]:
            items = body.get("results")
            if not isinstance(items, list) or len(items) != len(pending):
                raise ResponseShapeError(f'"results" does not hold one entry for each of the {len(pending)} files')
            model = model_from_json(body)
            return [failure_from_json(item) or prediction_from_json(item, model) for item in items]

        for (position, _), entry in zip(pending, self._parsed(response, entries), strict=True):
            results[position] = entry

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """The response to the last attempt: 429 and 503 are tried again while the retry policy allows."""
        attempts = 0
        waited_s = 0.0
        while True:
            attempts += 1
            try:
                response = self._http.request(method, path, params=params, files=files)
            except httpx.ConnectTimeout as error:
                message = f"cannot connect to {self.url} within {self.connect_timeout_s:g} s; is the server up?"
                raise ClientError(message, code=CONNECTION_FAILED) from error
            except httpx.TimeoutException as error:
                message = f"{method} {self.url}{path} took longer than the timeout of {self.timeout_s:g} s"
                raise ClientError(message, code=TIMEOUT) from error
            except httpx.ConnectError as error:
                message = f"cannot connect to {self.url}: {error}; is the server running there?"
                raise ClientError(message, code=CONNECTION_FAILED) from error
            except httpx.TransportError as error:  # the connection broke before a whole answer came
                raise ClientError(f"{method} {self.url}{path}: {error}", code=CONNECTION_FAILED) from error
            if not retry or response.status_code not in self.retry.statuses:
                return response
            wait_s = next_wait_s(self.retry, attempts, retry_after_s(response.headers.get("retry-after")), waited_s)
            if wait_s is None:
                return response
            self._sleep(wait_s)
            waited_s += wait_s

    def _json(self, response: httpx.Response) -> Mapping[str, Any]:
        """A success's JSON object; any other answer raises its error."""
        if not response.is_success:
            raise self._error(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            raise self._invalid(response, "the answer is not a JSON object")
        return body

    def _parsed(self, response: httpx.Response, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except ResponseShapeError as error:
            raise self._invalid(response, str(error)) from None

    def _invalid(self, response: httpx.Response, problem: str) -> ClientError:
        message = f"{response.request.url} did not answer as this API does ({problem}); is it this server?"
        return ClientError(message, code=INVALID_RESPONSE, status=response.status_code)

    def _error(self, response: httpx.Response) -> ClientError:
        """The server's error as a ClientError: its code and message, or the start of whatever else it sent."""
        try:
            failure = failure_from_json(response.json())
        except (ValueError, ResponseShapeError):  # not JSON, or an error object of another shape
            failure = None
        if failure is None:
            text = " ".join(response.text.split())[:200] or "no body"
            failure = FailedPrediction(HTTP_ERROR, f"{response.reason_phrase or 'error'}: {text}")
        return ClientError(failure.message, code=failure.code, status=response.status_code)


def _read(image: ImageInput) -> _Upload:
    """The image's bytes and a file name for the upload (the server needs none, but its logs read better)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return _Upload("image", bytes(image))
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError("open the image file in binary mode ('rb'): its read() gave no bytes")
        name = getattr(image, "name", None)
        return _Upload(os.path.basename(name) if isinstance(name, str) else "image", data)
    path = os.fspath(image)
    with open(path, "rb") as file:
        return _Upload(os.path.basename(path) or "image", file.read())


def _describe(image: ImageInput) -> str:
    """A path or file object for an error message (bytes are never unreadable)."""
    if isinstance(image, str | os.PathLike):
        return os.fsdecode(image)
    name = getattr(image, "name", None)
    return name if isinstance(name, str) else "the image file"


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _top_k_param(top_k: int | None) -> dict[str, str] | None:
    return None if top_k is None else {"top_k": str(top_k)}

"""The client's one exception type, for the server's errors and its own alike."""

from __future__ import annotations

from cifar10_classifier.errors import UserError

# The client's own codes, for failures where no error came from the server; the server's are in its API docs.
CONNECTION_FAILED = "connection_failed"
TIMEOUT = "timeout"
INVALID_RESPONSE = "invalid_response"
UNREADABLE_FILE = "unreadable_file"
INVALID_URL = "invalid_url"
# An error answer without the API's JSON shape (a proxy's HTML page, say).
HTTP_ERROR = "http_error"


class ClientError(UserError):
    """A call that did not give its result. `status` is the HTTP status, None when no answer came (the server is
    down, the call timed out, a file could not be read); `code` is the server's error code (upload_too_large,
    not_image, too_many_requests, ...) or one of the client's own above; `message` says what to do."""

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status} {self.code}: {self.message}"

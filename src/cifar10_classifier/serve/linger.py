"""Lingering close, as nginx does it: an answer given before the request body was read (413, 415, 429, ...)
reaches every client, including those that send the whole body before they read anything.

Without it, closing a connection with unread bytes in its receive buffer makes the kernel send a reset, and a
client still sending (Python's urllib.request does so, and always asks for `Connection: close`) gets a broken
pipe instead of the answer. So the answer is sent at once (a client that reads early, like curl, has it in
milliseconds), then the rest of the body is read and thrown away, up to `linger_max_bytes` and
`linger_timeout_s`, and only then is the connection closed. Past either bound it is closed anyway: a client
sending without end is not read for ever. Such an answer always says `Connection: close`: when its headers go
out, nobody knows yet whether the rest of the body will fit the bound.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cifar10_classifier.serve.settings import Settings

_CONNECTION_CLOSE = (b"connection", b"close")


class LingeringClose:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.linger_max_bytes
        self.timeout_s = settings.linger_timeout_s
        self.max_connections = settings.linger_max_connections
        self.lingering_now = 0  # one event loop per worker: a plain counter is safe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == 0:  # no body, nothing to linger for: GETs and empty POSTs pass untouched
            await self.app(scope, receive, send)
            return
        received = 0
        body_complete = False
        lingering = False
        final_body_held = False

        async def watched_receive() -> Message:
            nonlocal received, body_complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
            else:  # http.disconnect: there is nothing left to read
                body_complete = True
            return message

        async def holding_send(message: Message) -> None:
            nonlocal lingering, final_body_held
            if message["type"] == "http.response.start" and not body_complete:
                lingering = True
                headers = list(message.get("headers", []))
                if _CONNECTION_CLOSE not in headers:
                    headers.append(_CONNECTION_CLOSE)
                message = {**message, "headers": headers}
            elif lingering and message["type"] == "http.response.body" and not message.get("more_body", False):
                # The answer goes out now; the server completes it (and closes) only after the drain below.
                final_body_held = True
                message = {**message, "more_body": True}
            await send(message)

        await self.app(scope, watched_receive, holding_send)
        if not final_body_held:
            return
        # After the app returns: the drain counts against no request timeout and no admission slot.
        remaining = None if declared is None else declared - received
        # A declared body too long for the bound is not read at all: its client gets a reset either way.
        fits = remaining is None or remaining <= self.max_bytes
        if not body_complete and fits and self.lingering_now < self.max_connections:
            self.lingering_now += 1
            try:
                await self._discard_body(receive)
            finally:
                self.lingering_now -= 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _discard_body(self, receive: Receive) -> None:
        """Read and drop the rest of the body until it ends, the client leaves, or a bound is reached."""
        discarded = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while discarded < self.max_bytes:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return
                    discarded += len(message.get("body", b""))
        except TimeoutError:
            return


def _declared_length(scope: Scope) -> int | None:
    """The request's Content-Length; None when the body is chunked (or the header is not a number)."""
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            return None
    return 0 if length is None else length

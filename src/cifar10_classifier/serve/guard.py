"""The request guard: admission limit (429), per-request timeout (504) and request metrics, as pure ASGI.

Pure ASGI rather than BaseHTTPMiddleware: that one wraps every request in an extra task and stream, a cost paid
on every request at a thousand requests a second. Health, readiness and metrics bypass the limit and the
timeout, so an overloaded server still answers its orchestrator and its scraper.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cifar10_classifier.serve.errors import error_body
from cifar10_classifier.serve.metrics import Metrics
from cifar10_classifier.serve.settings import Settings

BYPASS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = settings.max_in_flight
        self.timeout_s = settings.request_timeout_s
        self.retry_after = str(settings.retry_after_s)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        bypass = scope["path"] in BYPASS_PATHS
        if not bypass and self.in_flight >= self.max_in_flight:
            # Refuse at once: a queue without bound only turns overload into timeouts for everyone.
            message = f"the server is at its limit of {self.max_in_flight} requests in flight; retry shortly"
            await _send_error(send, 429, "too_many_requests", message, [(b"retry-after", self.retry_after.encode())])
            self.metrics.observe_request("(rejected)", scope["method"], 429, time.perf_counter() - started)
            return

        status = 500
        response_started = False

        async def send_and_watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        if not bypass:
            self.in_flight += 1
            self.metrics.in_flight.inc()
        try:
            if bypass:
                await self.app(scope, receive, send_and_watch)
            else:
                deadline = asyncio.timeout(self.timeout_s)
                try:
                    async with deadline:
                        await self.app(scope, receive, send_and_watch)
                except TimeoutError:
                    # Ours only if our deadline fired; too late for a clean answer once the response has begun.
                    if not deadline.expired() or response_started:
                        raise
                    status = 504
                    message = f"the request took longer than {self.timeout_s:g} s and was abandoned"
                    await _send_error(send, 504, "timeout", message)
        finally:
            if not bypass:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
            route = scope.get("route")
            # Route templates, never raw paths, as labels: a scan of random URLs must not grow the metrics.
            label = getattr(route, "path", None) or "(unmatched)"
            self.metrics.observe_request(label, scope["method"], status, time.perf_counter() - started)


async def _send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps(error_body(code, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

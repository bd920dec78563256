"""A scripted HTTP server for the client's retry and error tests: each request gets the next answer of its
script (the last one again once the script runs out), and the server records what it was asked."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A /predict answer as the real server gives it.
PREDICTION = {
    "class": "cat",
    "class_index": 3,
    "probability": 0.875,
    "top_k": [{"class": "cat", "probability": 0.875}, {"class": "dog", "probability": 0.1}],
    "in_distribution": True,
    "ood_score": -12.5,
    "model": {"name": "stub", "version": "1"},
    "timing_ms": {"decode": 0.5, "inference": 1.25, "total": 2.0},
}


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes | dict = field(default_factory=lambda: PREDICTION)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def too_many_requests(retry_after: str | None = "1") -> Answer:
    body = {"error": {"code": "too_many_requests", "message": "the server is at its limit; retry shortly"}}
    return Answer(429, body, {"Retry-After": retry_after} if retry_after is not None else {})


@dataclass
class StubServer:
    url: str
    requests: list[str]  # "POST /predict?top_k=2", in arrival order


@contextlib.contextmanager
def stub_server(*script: Answer) -> Iterator[StubServer]:
    answers = list(script)
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append(f"{self.command} {self.path}")
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            time.sleep(answer.delay_s)
            body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            content_type = "text/html" if isinstance(answer.body, bytes) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that timed out has gone
                self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None  # a client that left mid-answer is expected here
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield StubServer(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

"""Lingering close: an answer given before the body was read reaches a client that sends its whole body first,
and a body past the bound (in bytes or in seconds) is cut off instead of read for ever."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
import serve_support as images
from serve_support import threaded_server, upload

from cifar10_classifier.serve.app import create_app
from cifar10_classifier.serve.settings import Settings

MiB = 1024 * 1024
HEAD = "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=B\r\n"


@pytest.mark.slow
def test_urllib_reads_the_413_of_a_50_mb_upload(bundled_server):
    """urllib.request sends the whole body before it reads, and asks for `Connection: close`: without lingering
    it got a connection reset instead of this answer."""
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    body += b"\x00" * 50_000_000 + b"\r\n--B--\r\n"
    request = urllib.request.Request(
        f"{bundled_server}/predict", data=body, headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 413
    assert json.loads(raised.value.read())["error"]["code"] == "upload_too_large"
    assert raised.value.headers["connection"] == "close"


@pytest.fixture(scope="module")
def lingering_server(tiny_model):
    """Bounds small enough to pass in a test: 1 MiB of body, 0.3 s."""
    settings = Settings(
        model=tiny_model, max_upload_bytes=64 * 1024, linger_max_bytes=1 * MiB, linger_timeout_s=0.3, warmup_runs=0
    )
    with threaded_server(create_app(settings)) as base:
        yield int(base.rsplit(":", 1)[1])


def read_all(connection: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends until it closes, and whether it closed cleanly (no reset)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        return received, False
    return received, True


def send_until_closed(connection: socket.socket, chunk: bytes, most: int) -> int:
    """Bytes sent before the server closed the connection (at most `most`)."""
    sent = 0
    try:
        while sent < most:
            connection.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_within_the_bound_the_rest_is_read_and_the_answer_arrives(lingering_server):
    with socket.create_connection(("127.0.0.1", lingering_server), timeout=10) as connection:
        length = 512 * 1024  # over the 64 kB limit, within the 1 MiB linger
        connection.sendall(f"{HEAD}Connection: close\r\nContent-Length: {length}\r\n\r\n".encode())
        connection.sendall(b"\x00" * length)  # all of it, before reading, as urllib does
        answer, clean = read_all(connection)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower() and b'"upload_too_large"' in answer
    assert clean  # the body was read to its end, so closing sent no reset


def test_a_chunked_body_past_the_bound_is_cut_off(lingering_server):
    with socket.create_connection(("127.0.0.1", lingering_server), timeout=10) as connection:
        connection.sendall(f"{HEAD}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"10000\r\n" + b"\x00" * 0x10000 + b"\r\n"
        sent = send_until_closed(connection, chunk, most=1024 * MiB)
    # The bound plus what the socket buffers hold on the way: far from the gigabyte offered.
    assert sent < 128 * MiB


def test_a_declared_length_past_the_bound_is_not_read_at_all(lingering_server):
    with socket.create_connection(("127.0.0.1", lingering_server), timeout=10) as connection:
        connection.sendall(f"{HEAD}Content-Length: {1024 * MiB}\r\n\r\n".encode())
        sent = send_until_closed(connection, b"\x00" * 0x10000, most=1024 * MiB)
    assert sent < 128 * MiB


def test_a_stalled_body_is_closed_after_the_linger_timeout(lingering_server):
    with socket.create_connection(("127.0.0.1", lingering_server), timeout=10) as connection:
        connection.sendall(f"{HEAD}Content-Length: {512 * 1024}\r\n\r\n".encode() + b"\x00" * 100_000)
        answer, _ = read_all(connection)  # returns only because the server closes: the socket timeout is 10 s
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_an_answer_after_the_whole_body_keeps_the_connection_alive(client):
    answered = client.post("/predict", files=upload(images.tile_png()))
    assert answered.status_code == 200 and "connection" not in answered.headers


def test_an_early_answer_of_any_kind_lingers_and_closes(client):
    """A 415 comes before the body is read, like the 413: it lingers the same way."""
    refused = client.post("/predict", content=b"x" * 1000, headers={"content-type": "image/png"})
    assert refused.status_code == 415 and refused.headers["connection"] == "close"
    assert client.get("/healthz").headers.get("connection") is None  # no body, nothing to linger for


def test_past_the_lingering_connections_bound_a_connection_closes_at_once(tiny_model):
    """With no lingering slot free, an early answer closes at once instead of reading the rest for 30 s."""
    settings = Settings(
        model=tiny_model, max_upload_bytes=64 * 1024, linger_timeout_s=30, linger_max_connections=0, warmup_runs=0
    )
    with threaded_server(create_app(settings)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(f"{HEAD}Content-Length: {512 * 1024}\r\n\r\n".encode() + b"\x00" * 100_000)
            answer, _ = read_all(connection)  # a socket.timeout here: the server lingered
    assert answer.startswith(b"HTTP/1.1 413 ")

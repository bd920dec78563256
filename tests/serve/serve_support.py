"""Helpers for the serving tests: the root conftest's builders, images of every awkward kind, a running app."""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from support import build_tiny_onnx, color_tile, free_port  # noqa: F401 - re-exported for the serving tests

from cifar10_classifier.serve.app import create_app
from cifar10_classifier.serve.settings import Settings


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def tile_png(class_index: int = 3) -> bytes:
    return encode(Image.fromarray(color_tile(class_index)))


def jpeg(size=(64, 48), quality: int = 90) -> bytes:
    return encode(photo(size), "JPEG", quality=quality)


def png_16bit() -> bytes:
    gradient = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).astype(np.uint16)
    image = Image.fromarray(gradient)  # uint16 -> mode I;16, saved as a 16-bit grayscale PNG
    assert image.mode == "I;16"
    return encode(image)


def cmyk_jpeg() -> bytes:
    return encode(photo().convert("CMYK"), "JPEG")


def palette_png() -> bytes:
    image = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, transparency=0)


def grayscale_png() -> bytes:
    return encode(photo().convert("L"))


def alpha_png() -> bytes:
    image = photo().convert("RGBA")
    image.putalpha(128)
    return encode(image)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = jpeg((320, 240))
    return data[: len(data) // 2]


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims a huge canvas: a decompression bomb stopped at the header."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    # IHDR is the first chunk: 8-byte signature, 4-byte length, b"IHDR", then width and height.
    struct.pack_into(">II", data, 16, width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    struct.pack_into(">I", data, 29, crc)
    return bytes(data)


def chunked_upload(megabytes: int = 4) -> dict:
    """Request arguments for a multipart body sent chunked: no Content-Length, so a limit must count as it arrives."""
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()

    def body():
        yield head
        for _ in range(megabytes * 16):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    return {"content": body(), "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def wait_ready(client: TestClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError(f"not ready within {timeout_s} s: {client.get('/readyz').json()}")


@contextlib.contextmanager
def serving(settings: Settings, predictor=None, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient over a fresh app with its lifespan running (and the model warm, unless ready=False)."""
    app = create_app(settings, predictor=predictor)
    with TestClient(app, raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


def upload(data: bytes, name: str = "image.png", content_type: str = "image/png") -> dict:
    return {"file": (name, data, content_type)}


class GatedPredictor:
    """A real predictor whose inference waits for `gate`: lets a test hold requests in flight."""

    def __init__(self, model_path: Path):
        from cifar10_classifier.inference import Predictor

        self.inner = Predictor(model_path, threads=1)
        self.gate = threading.Event()
        self.calls = 0
        self.name, self.version, self.classes = self.inner.name, self.inner.version, self.inner.classes
        self.decode_options = self.inner.decode_options

    def normalize(self, images_uint8):
        return self.inner.normalize(images_uint8)

    def probabilities(self, inputs_float32):
        self.calls += 1
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return self.inner.probabilities(inputs_float32)


def metric_value(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


@contextlib.contextmanager
def threaded_server(app) -> Iterator[str]:
    """The app on a real uvicorn server in a thread of this process (so a test can still monkeypatch it)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)

"""End to end: `python -m cifar10_classifier serve` as a real process, a real HTTP client over loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import serve_support as images
from serve_support import free_port
from support import server_process

from cifar10_classifier import CLASSES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_model):
    """Two workers, as `make serve` runs them: covers the shared metrics and the settings handed to workers."""
    with server_process("--model", str(tiny_model), "--workers", "2", "--max-upload-bytes", "300000") as served:
        yield served


def test_a_real_upload_gets_a_prediction(server):
    base, _ = server
    photo = images.jpeg((640, 480))
    response = httpx.post(f"{base}/predict?top_k=4", files={"file": ("photo.jpg", photo, "image/jpeg")}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["class"] in CLASSES and len(body["top_k"]) == 4
    assert body["model"] == {"name": "tiny-test-model", "version": "0"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] >= 0


def test_concurrent_uploads_all_succeed(server):
    import asyncio

    base, _ = server

    async def many():
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            requests = [
                client.post("/predict", files={"file": ("t.png", images.tile_png(i % 10), "image/png")})
                for i in range(60)
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(many())
    assert all(response.status_code == 200 for response in responses)
    metrics = httpx.get(f"{base}/metrics").text  # summed over both workers
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("cifar10_http_requests_total{") and 'route="/predict"' in line and 'status="200"' in line
    )
    assert served >= 60
    assert "cifar10_batch_size_bucket" in metrics


def test_the_upload_limit_holds_on_the_wire(server):
    base, _ = server
    too_big = b"\x00" * 400_000
    declared = httpx.post(f"{base}/predict", files={"file": ("big.png", too_big, "image/png")}, timeout=10)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "upload_too_large"

    def chunks():
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"\x00" * 32768

    streamed = httpx.post(
        f"{base}/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"}, timeout=10
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "upload_too_large"
    assert httpx.get(f"{base}/healthz").status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_shuts_down_cleanly(tiny_model, workers):
    port = free_port()
    command = [sys.executable, "-m", "cifar10_classifier", "serve", "--model", str(tiny_model), "--port", str(port)]
    process = subprocess.Popen([*command, "--workers", str(workers), "--log-level", "warning"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_missing_model_path_is_a_one_line_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "cifar10_classifier", "serve", "--model", str(tmp_path / "nope.onnx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "model file not found" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1

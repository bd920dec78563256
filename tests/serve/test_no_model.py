"""With no model file the server still starts: alive, not ready, and every model route says how to get one."""

from __future__ import annotations

import pytest
import serve_support as images
from serve_support import serving, upload

from cifar10_classifier.serve import model as served_model
from cifar10_classifier.serve.settings import Settings

MESSAGE = "no model is bundled yet: run make bundled-model or pass --model"


@pytest.fixture
def no_bundled_model(monkeypatch, tmp_path):
    monkeypatch.setattr(served_model, "bundled_model_path", lambda: tmp_path / "absent" / "model-int8.onnx")


def test_without_a_bundled_model_the_server_starts_and_says_what_to_do(no_bundled_model):
    with serving(Settings(model=None), ready=False) as client:
        client.portal.call(client.app.state.context.wait_loaded)
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"error": {"code": "model_unavailable", "message": MESSAGE}}
        predicted = client.post("/predict", files=upload(images.tile_png()))
        assert predicted.status_code == 503
        assert predicted.json() == {"error": {"code": "model_unavailable", "message": MESSAGE}}
        for method, path in (("POST", "/predict/batch"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/cifar10")):
            assert client.request(method, path).json()["error"]["code"] == "model_unavailable"
        assert client.get("/").status_code == 200  # the page loads and shows the message from /readyz


def test_a_model_file_that_is_not_onnx_is_reported_not_fatal(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    with serving(Settings(model=broken), ready=False) as client:
        client.portal.call(client.app.state.context.wait_loaded)
        assert client.get("/healthz").status_code == 200
        error = client.get("/readyz").json()["error"]
        assert error["code"] == "model_unavailable" and "broken.onnx" in error["message"]

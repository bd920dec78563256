"""Under load: the admission limit answers 429 with Retry-After at once, and a slow request answers 504."""

from __future__ import annotations

import threading
import time

import serve_support as images
from serve_support import GatedPredictor, metric_value, serving, upload

from cifar10_classifier.serve.settings import Settings


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def post_in_thread(client, results: list) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(client.post("/predict", files=upload(images.tile_png()))), daemon=True
    )
    thread.start()
    return thread


def test_past_the_in_flight_limit_the_server_answers_429_with_retry_after(tiny_model):
    predictor = GatedPredictor(tiny_model)
    predictor.gate.set()  # let warm-up through
    settings = Settings(model=tiny_model, max_in_flight=2, max_wait_ms=0, warmup_runs=1, retry_after_s=2)
    with serving(settings, predictor=predictor) as client:
        predictor.gate.clear()
        results: list = []
        threads = [post_in_thread(client, results) for _ in range(2)]
        try:
            wait_for(lambda: metric_value(client, "cifar10_http_requests_in_flight") >= 2)
            refused = client.post("/predict", files=upload(images.tile_png()))
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["error"]["code"] == "too_many_requests"
            # Health, readiness and metrics bypass the limit: the orchestrator still sees a live, ready server.
            for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
                assert client.get(path).status_code == 200, path
        finally:
            predictor.gate.set()
            for thread in threads:
                thread.join(10)
        assert [response.status_code for response in results] == [200, 200]
        assert client.post("/predict", files=upload(images.tile_png())).status_code == 200
        assert 'status="429"' in client.get("/metrics").text


def test_a_request_slower_than_the_timeout_answers_504_and_the_server_recovers(tiny_model):
    predictor = GatedPredictor(tiny_model)
    predictor.gate.set()
    with serving(Settings(model=tiny_model, request_timeout_s=0.2, warmup_runs=1), predictor=predictor) as client:
        predictor.gate.clear()
        try:
            response = client.post("/predict", files=upload(images.tile_png()))
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "timeout"
        finally:
            predictor.gate.set()
        assert client.post("/predict", files=upload(images.tile_png())).status_code == 200


def test_before_warm_up_ends_readyz_and_predict_say_loading(tiny_model):
    predictor = GatedPredictor(tiny_model)  # the gate is shut: warm-up blocks, the model stays "loading"
    settings = Settings(model=tiny_model, warmup_runs=1, preload=False)
    with serving(settings, predictor=predictor, ready=False) as client:
        try:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_loading"
            busy = client.post("/predict", files=upload(images.tile_png()))
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        finally:
            predictor.gate.set()
        images.wait_ready(client)
        assert client.post("/predict", files=upload(images.tile_png())).status_code == 200


class CrashingPredictor(GatedPredictor):
    def probabilities(self, inputs_float32):
        if self.gate.is_set():
            return self.inner.probabilities(inputs_float32)
        raise RuntimeError("onnxruntime fell over")


def test_a_model_crash_answers_500_in_the_error_shape_and_the_server_keeps_serving(tiny_model):
    predictor = CrashingPredictor(tiny_model)
    predictor.gate.set()
    with serving(Settings(model=tiny_model, warmup_runs=1), predictor=predictor) as client:
        predictor.gate.clear()
        crashed = client.post("/predict", files=upload(images.tile_png()))
        assert crashed.status_code == 500
        assert crashed.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
        predictor.gate.set()
        assert client.post("/predict", files=upload(images.tile_png())).status_code == 200
        assert 'status="500"' in client.get("/metrics").text

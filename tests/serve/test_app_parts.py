"""The app's parts one by one: settings, the model's state machine, the runner's batches, metrics, the context."""

import asyncio

import numpy as np
import pytest
from serve_support import tile_png, truncated_jpeg

from cifar10_classifier.inference import Predictor
from cifar10_classifier.preprocess import ImageDecodeError
from cifar10_classifier.serve.app import create_app
from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import ApiError
from cifar10_classifier.serve.metrics import Metrics
from cifar10_classifier.serve.model import ModelRunner, ModelState
from cifar10_classifier.serve.settings import Settings


def test_settings_read_the_environment_and_refuse_nonsense(monkeypatch):
    monkeypatch.setenv("CIFAR10_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CIFAR10_WORKERS", "3")
    settings = Settings()
    assert settings.max_batch_size == 8 and settings.resolved_workers() == 3
    monkeypatch.delenv("CIFAR10_WORKERS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert Settings().resolved_workers() == 4  # one per core, at most 4
    with pytest.raises(ValueError):
        Settings(port=70000)


def test_model_state_goes_loading_ready_or_unavailable_with_a_reason(tiny_model, tmp_path):
    state = ModelState()
    assert (state.status, state.ready) == ("loading", False)
    state.load(Settings(model=tmp_path / "missing.onnx", warmup_runs=0))
    assert state.status == "unavailable" and "not found" in state.message
    state.load(Settings(model=tiny_model, warmup_runs=1))
    assert state.ready and state.describe()["model"]["name"] == "tiny-test-model"


def test_the_runner_fails_one_bad_upload_only(tiny_model):
    runner = ModelRunner(Predictor(tiny_model, threads=1), max_pixels=1_000_000)
    tensor = np.zeros((2, 3, 32, 32), np.float32)
    results = runner.run_batch([tile_png(1), truncated_jpeg(), tensor])
    assert results[0].probabilities.shape == (1, 10) and results[0].batch_size == 3
    assert isinstance(results[1], ImageDecodeError)
    assert results[2].probabilities.shape == (2, 10)
    assert runner.run_batch([truncated_jpeg()])[0].kind in ("corrupt", "not_image")


def test_metrics_count_requests_and_batches():
    metrics = Metrics()
    metrics.observe_request("/predict", "POST", 200, 0.01)
    metrics.observe_request("/predict", "POST", 200, 0.02)
    metrics.observe_batch(4, [0.001] * 4)
    text = metrics.render().decode()
    assert 'cifar10_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert "cifar10_batch_size_count 1.0" in text
    metrics.close()


def test_the_context_answers_503_until_a_model_is_ready(tiny_model, tmp_path):
    async def scenario():
        context = ServerContext(Settings(model=tmp_path / "missing.onnx", warmup_runs=0))
        with pytest.raises(ApiError) as loading:
            context.require_ready()
        assert loading.value.status == 503
        await context.start()
        await context.wait_loaded()
        with pytest.raises(ApiError) as unavailable:
            context.require_ready()
        await context.stop()
        return unavailable.value

    error = asyncio.run(scenario())
    assert error.status == 503 and error.code == "model_unavailable"


def test_create_app_registers_every_route(tiny_model):
    paths = set(create_app(Settings(model=tiny_model)).openapi()["paths"])
    assert {"/predict", "/predict/batch", "/healthz", "/readyz", "/metrics"} <= paths
    assert any(path.startswith("/v2/models") for path in paths)

"""Shared fixtures; the helpers they use live in support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import build_tiny_onnx, server_process, tiny_dataset, tiny_recipe


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own dataset cache: no test reads another's (or the user's) cache."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_onnx_model(tmp_path) -> Path:
    return build_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def trained_run(tmp_path_factory):
    """A tiny finished `fast` run folder (weights, card, metrics, plots) and its dataset."""
    from cifar10_classifier.jobs import TrainJob, run_training_job

    dataset = tiny_dataset()
    out_dir = tmp_path_factory.mktemp("run")
    job = TrainJob(
        recipe=tiny_recipe("fast", epochs=3, tta_level=1), data=None, out_dir=out_dir, force=True, show_progress=False
    )
    import cifar10_classifier.data as data_module

    original = data_module.load_dataset
    data_module.load_dataset = lambda *args, **kwargs: dataset
    try:
        run_training_job(job)
    finally:
        data_module.load_dataset = original
    return out_dir, dataset


@pytest.fixture(scope="session")
def bundled_server() -> Iterator[str]:
    """A real `cifar10 serve` process on the bundled model, its base URL: one worker, and a 300 kB upload limit a
    test reaches cheaply. Started once, for the client, the `predict --url` and the lingering-close tests."""
    with server_process("--workers", "1", "--max-upload-bytes", "300000") as (base, _):
        yield base

"""Fixtures for the serving tests: a tiny model built once, and a running app over it."""

from __future__ import annotations

import pytest
from serve_support import build_tiny_onnx, serving

from cifar10_classifier.serve.settings import Settings


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_onnx(tmp_path_factory.mktemp("serve-model") / "tiny.onnx")


@pytest.fixture(scope="module")
def client(tiny_model):
    """One app per test module: starting one is cheap, but not free."""
    with serving(Settings(model=tiny_model, max_upload_bytes=2 * 1024 * 1024, max_pixels=4_000_000)) as client:
        yield client

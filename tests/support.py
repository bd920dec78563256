"""Helpers the tests share: tiny data and a tiny ONNX model the tests build themselves.

A plain module, not conftest.py: `from conftest import ...` is ambiguous once tests/serve/ has a conftest too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10_classifier import CLASSES

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def shared_archive_or_skip() -> Path:
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"real-data test: {SHARED_ARCHIVE} is absent (a fresh clone has no ../shared)")
    return SHARED_ARCHIVE


def png_bytes(array_uint8: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array_uint8, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def color_tile(class_index: int, size: int = 32) -> np.ndarray:
    """A solid tile whose colour encodes the class: trivially learnable, so tiny trainings can be checked."""
    rng = np.random.default_rng(class_index)
    color = rng.integers(0, 256, size=3)
    return np.broadcast_to(color, (size, size, 3)).astype(np.uint8).copy()


def build_tiny_onnx(path: Path, card: dict | None = None, ood_threshold: float | None = None) -> Path:
    """A 1-layer ONNX classifier (global average pool -> linear) built with onnx.helper, no torch needed. With
    ood_threshold it has an "ood_score" output too (the squared norm of the pooled colour) and the threshold in its
    card, as an exported model with an off-distribution detector has."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, len(CLASSES))).astype(np.float32)
    bias = np.zeros(len(CLASSES), dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)])]
    initializers = [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")]
    if ood_threshold is not None:
        nodes += [
            helper.make_node("Mul", ["flat", "flat"], ["squared"]),
            helper.make_node("ReduceSum", ["squared", "axis"], ["ood_score"], keepdims=0),
        ]
        initializers.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
        outputs.append(helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        outputs,
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = card or {"name": "tiny-test-model", "version": "0", "classes": list(CLASSES)}
    if ood_threshold is not None:
        card = {**card, "ood": {"detector": "squared norm (test model)", "threshold": ood_threshold}}
    helper.set_model_props(model, {"cifar10_card": json.dumps(card)})
    onnx.save(model, str(path))
    return path


def tiny_dataset(per_class_train: int = 20, per_class_test: int = 5, seed: int = 0):
    """A learnable synthetic Dataset: each class is a colour with a little noise."""
    from cifar10_classifier.data import Dataset, Split

    rng = np.random.default_rng(seed)

    def split(per_class: int) -> Split:
        images, labels = [], []
        for class_index in range(len(CLASSES)):
            base = color_tile(class_index).astype(np.int16)
            for _ in range(per_class):
                noise = rng.integers(-20, 21, size=base.shape)
                images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
                labels.append(class_index)
        return Split(np.stack(images), np.asarray(labels, dtype=np.int64))

    return Dataset(split(per_class_train), split(per_class_test), "synthetic", "0" * 64)


def tiny_recipe(name: str = "fast", **overrides):
    """A recipe shrunk to seconds: tiny widths, few epochs, small batches."""
    from cifar10_classifier.training.recipes import resolve_recipe

    small = {
        "fast": {"model_config": {"widths": [8, 16, 16]}, "batch_size": 40, "epochs": 2, "whiten_images": 100},
        "classic": {
            "model_config": {"widths": [8, 16], "block_dropout": [0.1, 0.1], "dense_width": 16},
            "batch_size": 32,
            "epochs": 3,
        },
    }[name]
    return resolve_recipe(name, {**small, **overrides})


def write_image_folder(dataset, root: Path) -> Path:
    """`dataset` as PNG files in <root>/<split>/<class>/, a source `cifar10 train --data` reads."""
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        for index, (image, label) in enumerate(zip(split.images_uint8, split.labels, strict=True)):
            path = root / split_name / CLASSES[int(label)] / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(np.asarray(image)))
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server_process(*serve_args: str, ready_within_s: float = 60.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m cifar10_classifier serve ARGS` on a free port, yielded as (base URL, process) once /readyz
    answers 200, and stopped with SIGTERM after. The test's own CIFAR10_* variables are not handed on."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "cifar10_classifier", "serve", "--port", str(port), "--log-level", "warning"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CIFAR10_")}
    process = subprocess.Popen(
        [*command, *serve_args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within_s
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {ready_within_s:g} s")
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()

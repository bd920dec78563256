"""A Predictor over an exported ONNX model, with ONNX Runtime. No torch: this is the serving path.

The model takes float32 (N, 3, 32, 32) normalized images and returns logits (N, 10), already divided by the
temperature the export fitted (so their softmax is a calibrated probability). A model exported with an
off-distribution detector has a second output "ood_score" (N,), higher = more off-distribution, and its card's
"ood" entry holds the threshold: a score at or below it is in distribution. Models without that output (older
files, hand-built ones) still work: their predictions carry in_distribution and ood_score as None (JSON null).
Its card (classes, normalization, resize filter, accuracy) is read from the ONNX metadata, or from the JSON
file beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cifar10_classifier import CLASSES
from cifar10_classifier.errors import UserError
from cifar10_classifier.machine import usable_cores
from cifar10_classifier.preprocess import (
    MEAN_RGB,
    RESIZE_FILTER,
    STD_RGB,
    DecodeOptions,
    decode_image,
    normalize,
)

CARD_METADATA_KEY = "cifar10_card"
OOD_OUTPUT = "ood_score"
BUNDLED_MODEL_NAME = "model-int8.onnx"
# Said by `predict` and by the server (on /readyz, /predict and the page) when no model file exists.
NO_BUNDLED_MODEL = "no model is bundled yet: run make bundled-model or pass --model"


class ModelLoadError(UserError):
    """The model file is missing or unusable; the message says what to do."""


def bundled_model_path() -> Path:
    """The int8 model shipped inside the package (see `make bundled-model`)."""
    return Path(str(resources.files("cifar10_classifier") / "bundled" / BUNDLED_MODEL_NAME))


def card_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


@dataclass(frozen=True)
class Prediction:
    class_name: str
    class_index: int
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    in_distribution: bool | None = None  # None: the model has no off-distribution detector
    ood_score: float | None = None  # higher = more off-distribution

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "class_index": self.class_index,
            "probability": self.probability,
            "top_k": [{"class": name, "probability": p} for name, p in self.top_k],
            "in_distribution": self.in_distribution,
            "ood_score": self.ood_score,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def top_k_of(
    probabilities: np.ndarray,
    classes: tuple[str, ...],
    k: int,
    ood_score: float | None = None,
    ood_threshold: float | None = None,
) -> Prediction:
    """One row of probabilities -> a Prediction with the k most likely classes (and, given a score and the
    threshold, whether the image looks like any of them)."""
    k = max(1, min(int(k), len(classes)))
    order = np.argsort(-probabilities, kind="stable")[:k]
    best = int(order[0])
    return Prediction(
        class_name=classes[best],
        class_index=best,
        probability=float(probabilities[best]),
        top_k=[(classes[int(i)], float(probabilities[int(i)])) for i in order],
        **ood_fields(ood_score, ood_threshold),
    )


def ood_fields(ood_score: float | None, ood_threshold: float | None) -> dict[str, Any]:
    """-> {"in_distribution", "ood_score"}, both None without a detector."""
    if ood_score is None or ood_threshold is None:
        return {"in_distribution": None, "ood_score": None}
    return {"in_distribution": bool(ood_score <= ood_threshold), "ood_score": float(ood_score)}


def default_threads(workers: int = 1) -> int:
    """Share the cores between server workers instead of letting each grab all of them."""
    cores = usable_cores()
    return max(1, cores // max(1, workers))


class Predictor:
    """Load once, predict many times. Thread-safe: ONNX Runtime sessions allow concurrent `run` calls."""

    def __init__(self, model_path: str | Path | None = None, *, threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            hint = NO_BUNDLED_MODEL if model_path is None else "check the path, or export one with `cifar10 export RUN`"
            raise ModelLoadError(f"{self.model_path}: model file not found; {hint}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            # Busy-waiting threads steal the cores a server needs for decoding and HTTP.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"{self.model_path}: not a loadable ONNX model ({error}); re-export it") from error
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.card = self._read_card()
        threshold = (self.card.get("ood") or {}).get("threshold")
        # Both the output and its threshold, or neither: a score without a threshold means nothing.
        self.ood_threshold: float | None = (
            float(threshold) if threshold is not None and OOD_OUTPUT in self.output_names else None
        )
        self.classes: tuple[str, ...] = tuple(self.card.get("classes", CLASSES))
        normalization = self.card.get("input", {})
        self.mean = tuple(normalization.get("mean", MEAN_RGB))
        self.std = tuple(normalization.get("std", STD_RGB))
        self.decode_options = DecodeOptions(resize_filter=normalization.get("resize_filter", RESIZE_FILTER))

    def _read_card(self) -> dict[str, Any]:
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CARD_METADATA_KEY in metadata:
            return dict(json.loads(metadata[CARD_METADATA_KEY]))
        beside = card_path_for(self.model_path)
        if beside.is_file():
            return dict(json.loads(beside.read_text()))
        return {"name": self.model_path.stem, "version": "unknown", "classes": list(CLASSES)}

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.model_path.stem))

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unknown"))

    @property
    def has_ood(self) -> bool:
        return self.ood_threshold is not None

    def logits(self, inputs_float32: np.ndarray) -> np.ndarray:
        """float32 (N, 3, 32, 32) normalized -> logits (N, 10); the ood_score output is not computed."""
        inputs = np.ascontiguousarray(inputs_float32, np.float32)
        return np.asarray(self.session.run([self.output_names[0]], {self.input_name: inputs})[0])

    def logits_and_ood(self, inputs_float32: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """-> (logits (N, 10), ood scores (N,) or None without a detector): one ONNX Runtime call."""
        names = [self.output_names[0], OOD_OUTPUT] if self.has_ood else [self.output_names[0]]
        outputs = self.session.run(names, {self.input_name: np.ascontiguousarray(inputs_float32, np.float32)})
        return outputs[0], (outputs[1] if self.has_ood else None)

    def probabilities(self, inputs_float32: np.ndarray) -> np.ndarray:
        return softmax(self.logits(inputs_float32))

    def probabilities_and_ood(self, inputs_float32: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, ood_scores = self.logits_and_ood(inputs_float32)
        return softmax(logits), ood_scores

    def normalize(self, images_uint8: np.ndarray) -> np.ndarray:
        return normalize(images_uint8, self.mean, self.std)

    def predict_images(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, 32, 32, 3) -> probabilities (N, 10)."""
        return self.probabilities(self.normalize(images_uint8))

    def decode(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 (32, 32, 3), with the model's own decode options."""
        return decode_image(data, self.decode_options)

    def predict_bytes(self, data: bytes, top_k: int = 3) -> Prediction:
        probabilities, ood_scores = self.probabilities_and_ood(self.normalize(self.decode(data)[None]))
        ood_score = None if ood_scores is None else float(ood_scores[0])
        return top_k_of(probabilities[0], self.classes, top_k, ood_score, self.ood_threshold)

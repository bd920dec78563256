"""What the server answers, as frozen dataclasses: the fields of POST /predict's JSON, `class` spelled
`class_name` (a Python keyword otherwise). Parsed strictly, so a wrong server or a proxy's page fails here with
one clear error instead of a KeyError later; fields the client does not know are ignored (newer servers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClassProbability:
    class_name: str
    probability: float


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class Timing:
    """Milliseconds, as the server measured them."""

    decode: float  # this image's decode and resize
    inference: float  # the ONNX Runtime call it shared with its batch
    total: float | None = None  # from the request reaching the route to the answer; None for one image of a batch


@dataclass(frozen=True, slots=True)
class Prediction:
    class_name: str
    class_index: int
    probability: float
    top_k: tuple[ClassProbability, ...]
    in_distribution: bool | None  # False: like none of the 10 classes; None: the model has no such detector
    ood_score: float | None  # higher = more off-distribution; None without a detector
    model: ModelInfo
    timing_ms: Timing

    def to_dict(self) -> dict[str, Any]:
        """The classification, keyed as the server's JSON: the same dict a local `Predictor` prediction gives."""
        return {
            "class": self.class_name,
            "class_index": self.class_index,
            "probability": self.probability,
            "top_k": [{"class": entry.class_name, "probability": entry.probability} for entry in self.top_k],
            "in_distribution": self.in_distribution,
            "ood_score": self.ood_score,
        }


@dataclass(frozen=True, slots=True)
class FailedPrediction:
    """The entry of `predict_many` for an image that got no prediction: the server's error for it (not_image,
    corrupt_image, ...), or unreadable_file when the client could not read it."""

    code: str
    message: str


class ResponseShapeError(ValueError):
    """The JSON is not the API's: the message names the field."""


def prediction_from_json(body: object, model: ModelInfo | None = None) -> Prediction:
    """A /predict answer, or one entry of /predict/batch's `results` with `model` taken from the batch."""
    if not isinstance(body, Mapping):
        raise ResponseShapeError("a prediction is not an object")
    top_k = body.get("top_k")
    if not isinstance(top_k, list) or not top_k:
        raise ResponseShapeError('"top_k" is not a list of classes')
    timing = _mapping(body, "timing_ms")
    return Prediction(
        class_name=_text(body, "class"),
        class_index=_integer(body, "class_index"),
        probability=_number(body, "probability"),
        top_k=tuple(ClassProbability(_text(entry, "class"), _number(entry, "probability")) for entry in top_k),
        in_distribution=_optional_bool(body, "in_distribution"),
        ood_score=None if body.get("ood_score") is None else _number(body, "ood_score"),
        model=model or model_from_json(body),
        timing_ms=Timing(
            decode=_number(timing, "decode"),
            inference=_number(timing, "inference"),
            total=None if timing.get("total") is None else _number(timing, "total"),
        ),
    )


def model_from_json(body: Mapping[str, Any]) -> ModelInfo:
    model = _mapping(body, "model")
    return ModelInfo(_text(model, "name"), _text(model, "version"))


def failure_from_json(body: object) -> FailedPrediction | None:
    """The API's `{"error": {"code", "message"}}`, or None when `body` is not an error."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return None
    return FailedPrediction(_text(error, "code"), _text(error, "message"))


def _mapping(body: object, key: str) -> Mapping[str, Any]:
    value = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(value, Mapping):
        raise ResponseShapeError(f'"{key}" is missing or not an object')
    return value


def _text(body: object, key: str) -> str:
    value = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(value, str):
        raise ResponseShapeError(f'"{key}" is missing or not a string')
    return value


def _integer(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ResponseShapeError(f'"{key}" is missing or not an integer')
    return value


def _number(body: object, key: str) -> float:
    value = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ResponseShapeError(f'"{key}" is missing or not a number')
    return float(value)


def _optional_bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise ResponseShapeError(f'"{key}" is not true, false or null')
    return value

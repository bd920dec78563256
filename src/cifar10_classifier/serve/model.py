"""The served model: loaded in a thread, warmed up, then fed by the micro-batcher.

`/readyz` says 503 until the model is warm. With no model file the server still starts and says, on every route
that needs the model, how to get one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from cifar10_classifier.inference import NO_BUNDLED_MODEL, ModelLoadError, Predictor, bundled_model_path
from cifar10_classifier.preprocess import IMAGE_SIZE, DecodeOptions, ImageDecodeError, decode_image
from cifar10_classifier.serve.settings import Settings

log = logging.getLogger("cifar10_classifier.serve")


class PredictorLike(Protocol):
    """What the server needs of a predictor (tests pass a slow or failing one)."""

    name: str
    version: str
    classes: tuple[str, ...]
    decode_options: DecodeOptions

    def normalize(self, images_uint8: np.ndarray) -> np.ndarray: ...

    def probabilities(self, inputs_float32: np.ndarray) -> np.ndarray: ...


@dataclass(slots=True)
class ItemResult:
    """One request's share of a batch: its probabilities (n, classes) and what it cost."""

    probabilities: np.ndarray
    decode_s: float
    inference_s: float
    batch_size: int
    ood_scores: np.ndarray | None = None  # (n,), higher = more off-distribution; None without a detector


# A batch item: image bytes to decode (in the batch thread, off the event loop), or a ready float32 tensor
# (N, 3, 32, 32) already normalized, from the Open Inference Protocol route.
BatchItem = bytes | np.ndarray


class ModelRunner:
    """Decode + one ONNX Runtime call for a whole batch. Runs in the batcher's thread."""

    def __init__(self, predictor: PredictorLike, max_pixels: int) -> None:
        self.predictor = predictor
        self.decode_options = dataclasses.replace(predictor.decode_options, max_pixels=max_pixels)

    def decode(self, data: bytes) -> np.ndarray:
        """Upload bytes -> uint8 (32, 32, 3) within the server's pixel limit; every failure is an ImageDecodeError."""
        try:
            return decode_image(data, self.decode_options)
        except ImageDecodeError:
            raise
        except Exception as error:  # a decoder bug on a hostile file must fail this upload only, as a corrupt image
            log.warning("decoder failed on an upload: %r", error)
            raise ImageDecodeError("corrupt", f"the image could not be decoded ({error!r})") from error

    def run_batch(self, items: list[BatchItem]) -> list[ItemResult | Exception]:
        results: list[ItemResult | Exception | None] = [None] * len(items)
        images: list[np.ndarray] = []
        image_slots: list[tuple[int, float]] = []
        tensors: list[np.ndarray] = []
        tensor_slots: list[int] = []
        for index, item in enumerate(items):
            if isinstance(item, bytes):
                started = time.perf_counter()
                try:
                    images.append(self.decode(item))
                except ImageDecodeError as error:
                    results[index] = error  # fails this request only
                    continue
                image_slots.append((index, time.perf_counter() - started))
            else:
                tensors.append(item)
                tensor_slots.append(index)
        parts = []
        if images:
            parts.append(self.predictor.normalize(np.stack(images)))  # (n, 3, 32, 32)
        parts.extend(tensors)
        if not parts:
            return results  # type: ignore[return-value]
        started = time.perf_counter()
        inputs = np.concatenate(parts) if len(parts) > 1 else parts[0]
        probabilities, ood = probabilities_and_ood(self.predictor, inputs)
        inference_s = time.perf_counter() - started
        rows = len(probabilities)

        def share(start: int, stop: int) -> np.ndarray | None:
            return None if ood is None else ood[start:stop]

        for row, (index, decode_s) in enumerate(image_slots):
            results[index] = ItemResult(probabilities[row : row + 1], decode_s, inference_s, rows, share(row, row + 1))
        row = len(image_slots)
        for index, tensor in zip(tensor_slots, tensors, strict=True):
            results[index] = ItemResult(
                probabilities[row : row + len(tensor)], 0.0, inference_s, rows, share(row, row + len(tensor))
            )
            row += len(tensor)
        return results  # type: ignore[return-value]


def probabilities_and_ood(predictor: PredictorLike, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """What a request needs, in one model call: a Predictor gives the ood scores too; test doubles give none."""
    with_ood = getattr(predictor, "probabilities_and_ood", None)
    return with_ood(inputs) if with_ood else (predictor.probabilities(inputs), None)


def load_predictor(settings: Settings) -> Predictor:
    """Load the configured model or raise ModelLoadError with a message a user can act on."""
    if settings.model is None and not bundled_model_path().is_file():
        raise ModelLoadError(NO_BUNDLED_MODEL)
    return Predictor(settings.model, threads=settings.threads, spin=settings.spin)


def warm_up(predictor: PredictorLike, settings: Settings) -> None:
    """Run the shapes the batcher will send, so the first real requests do not pay for allocations."""
    for _ in range(settings.warmup_runs):
        for size in sorted({1, settings.max_batch_size}):
            probabilities_and_ood(predictor, np.zeros((size, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32))


class ModelState:
    """loading -> ready, or loading -> unavailable (with the reason)."""

    def __init__(self) -> None:
        self.status = "loading"
        self.message = "the model is loading"
        self.predictor: PredictorLike | None = None
        self.runner: ModelRunner | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def set_ready(self, predictor: PredictorLike, settings: Settings) -> None:
        self.runner = ModelRunner(predictor, settings.max_pixels)
        self.predictor = predictor
        self.status, self.message = "ready", "the model is loaded and warmed up"

    def set_unavailable(self, message: str) -> None:
        self.status, self.message = "unavailable", message

    def load(self, settings: Settings, predictor: PredictorLike | None = None) -> None:
        """Blocking: run it in a thread."""
        started = time.perf_counter()
        try:
            # Predictor is a PredictorLike; mypy reads its name/version properties as unlike the protocol's fields
            loaded = cast(PredictorLike, predictor or load_predictor(settings))
            warm_up(loaded, settings)
        except ModelLoadError as error:
            log.warning("serving without a model: %s", error)
            self.set_unavailable(str(error))
            return
        except Exception as error:  # a model that loads but cannot run: say so, keep serving health and the page
            log.exception("model failed to warm up")
            self.set_unavailable(f"the model failed to run: {error}")
            return
        self.set_ready(loaded, settings)
        log.info("model %s %s ready in %.2f s", loaded.name, loaded.version, time.perf_counter() - started)

    def describe(self) -> dict[str, Any]:
        model = {"name": self.predictor.name, "version": self.predictor.version} if self.predictor else None
        return {"status": self.status, "message": self.message, "model": model}

"""Why this class: occlusion sensitivity. Torch-free: the server and the CLI run it.

Hide one cell of the image at a time and see how much the predicted class's probability falls: the cells whose
loss hurts most are the ones the model looked at. Model-agnostic (it needs only the predictor's outputs) and one
ONNX Runtime call: every masked variant and the original go through as one batch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from cifar10_classifier.inference import Prediction, softmax, top_k_of
from cifar10_classifier.preprocess import IMAGE_SIZE, MEAN_RGB

# 8x8 cells of 4x4 pixels: a 65-image batch, ~55 ms on two cores with the bundled int8 model (~1,200 img/s). A 4x4
# grid (8-pixel cells) is too coarse to point at a part; 16x16 would cost four times as much.
DEFAULT_GRID = 8
OVERLAY_SIZE = 256
# Opacity of the hottest cell: the image stays readable under the colour; a cell that does not matter stays clear.
OVERLAY_MAX_ALPHA = 0.6


class ExplainablePredictor(Protocol):
    """`Predictor`, or anything that normalizes uint8 images and returns `probabilities` or `logits`."""

    classes: tuple[str, ...]

    def normalize(self, images_uint8: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Explanation:
    prediction: Prediction
    heatmap: list[list[float]]  # (grid, grid), rows first, 0..1: 1 is the cell whose loss hurt most
    grid: int

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "heatmap": self.heatmap, "grid": self.grid}


def _probabilities(predictor, inputs_float32: np.ndarray) -> np.ndarray:
    if hasattr(predictor, "probabilities"):
        return np.asarray(predictor.probabilities(inputs_float32))
    return softmax(np.asarray(predictor.logits(inputs_float32)))


def _fill_value(predictor) -> np.ndarray:
    """The training mean colour as the network sees it, (3,): 0 for `Predictor`, whatever a stub normalizes it to.

    The mean, not black: black is itself a feature (night, shadow, tyres), so a black patch adds evidence as well
    as removing it; the mean colour is zero input after normalization, the closest to "nothing here".
    """
    mean = np.asarray(getattr(predictor, "mean", MEAN_RGB), dtype=np.float32).reshape(1, 1, 1, 3)
    return np.asarray(predictor.normalize(mean), dtype=np.float32).reshape(3)


def occlusion_batch(inputs_float32: np.ndarray, grid: int, fill: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) -> (1 + grid * grid, 3, H, W): the original first, then one masked copy per cell, rows first."""
    _, channels, height, width = inputs_float32.shape
    if height % grid or width % grid:
        raise ValueError(f"a grid of {grid} does not divide a {height}x{width} image")
    cell_h, cell_w = height // grid, width // grid
    batch = np.repeat(inputs_float32, 1 + grid * grid, axis=0)
    # Every masked copy as (cells, C, grid_rows, cell_h, grid_cols, cell_w): cell k's own block set by one
    # fancy-index assignment instead of a Python loop of slices.
    masked = batch[1:].reshape(grid * grid, channels, grid, cell_h, grid, cell_w)
    cells = np.arange(grid * grid)
    masked[cells, :, cells // grid, :, cells % grid, :] = fill.reshape(1, channels, 1, 1)
    return batch


def occlusion_map(predictor, image_uint8: np.ndarray, *, grid: int = DEFAULT_GRID, top_k: int = 3) -> Explanation:
    """One uint8 (32, 32, 3) image -> its prediction and occlusion-sensitivity map, in one batched model call."""
    if image_uint8.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) image, got {image_uint8.shape}")
    inputs = np.asarray(predictor.normalize(image_uint8[None]), dtype=np.float32)
    probabilities = _probabilities(predictor, occlusion_batch(inputs, grid, _fill_value(predictor)))
    prediction = top_k_of(probabilities[0], tuple(predictor.classes), top_k)
    # Only drops count: a cell whose loss makes the class more likely is not evidence for it.
    drops = np.clip(probabilities[0, prediction.class_index] - probabilities[1:, prediction.class_index], 0.0, None)
    largest = float(drops.max())
    # Float noise from a model that ignores every cell would otherwise be stretched into a full-scale map.
    heatmap = drops / largest if largest > 1e-7 else np.zeros_like(drops)
    # 4 decimals: finer than any colour step of the overlay, and the JSON stays small.
    rows = np.round(heatmap.reshape(grid, grid).astype(np.float64), 4).tolist()
    return Explanation(prediction=prediction, heatmap=rows, grid=grid)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values 0..1 -> uint8 RGB on a red (low) to yellow (high) ramp, shape (..., 3)."""
    values = np.clip(values, 0.0, 1.0)
    return np.stack([np.full_like(values, 255.0), 255.0 * values, np.zeros_like(values)], axis=-1).astype(np.uint8)


def render_overlay(image_uint8: np.ndarray, heatmap, size: int = OVERLAY_SIZE) -> bytes:
    """The image upscaled to size x size with the heat map blended on top -> PNG bytes.

    Nearest-neighbour both: the model saw these exact pixels, and the map's cells are blocks, not a smooth field.
    """
    values = np.asarray(heatmap, dtype=np.float32)
    image = np.asarray(Image.fromarray(image_uint8).resize((size, size), Image.Resampling.NEAREST), np.float32)
    cells = Image.fromarray(values).resize((size, size), Image.Resampling.NEAREST)
    upscaled = np.clip(np.asarray(cells, dtype=np.float32), 0.0, 1.0)
    alpha = (OVERLAY_MAX_ALPHA * upscaled)[..., None]
    blended = image * (1.0 - alpha) + heat_colors(upscaled).astype(np.float32) * alpha
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()

"""Occlusion sensitivity on constructed cases: a stub model whose answer depends on known pixels only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cifar10_classifier import CLASSES
from cifar10_classifier.explain import heat_colors, occlusion_batch, occlusion_map, render_overlay
from cifar10_classifier.inference import Predictor
from cifar10_classifier.preprocess import normalize


class CornerPredictor:
    """Class 0's logit grows with the top-left 4x4 pixels' brightness above the mean; nothing else matters.

    Model-independent: the right map is known without any training."""

    classes = CLASSES
    mean = (125.3, 122.9, 113.9)
    std = (62.5, 61.9, 66.5)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def normalize(self, images_uint8):
        return normalize(images_uint8, self.mean, self.std)

    def logits(self, inputs_float32):
        self.calls.append(len(inputs_float32))
        logits = np.zeros((len(inputs_float32), len(self.classes)), np.float32)
        logits[:, 0] = 4.0 * inputs_float32[:, :, :4, :4].mean(axis=(1, 2, 3))
        return logits


class ConstantPredictor(CornerPredictor):
    def logits(self, inputs_float32):
        self.calls.append(len(inputs_float32))
        return np.tile(np.arange(len(self.classes), dtype=np.float32), (len(inputs_float32), 1))


def bright_corner_image() -> np.ndarray:
    image = np.full((32, 32, 3), 120, np.uint8)
    image[:4, :4] = 255
    return image


def test_the_cell_the_model_looks_at_lights_up_and_nothing_else():
    predictor = CornerPredictor()
    explanation = occlusion_map(predictor, bright_corner_image())
    heatmap = np.asarray(explanation.heatmap)
    assert explanation.prediction.class_name == CLASSES[0]
    assert heatmap.shape == (8, 8) and explanation.grid == 8
    assert heatmap[0, 0] == 1.0
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (0, 0)
    heatmap[0, 0] = 0.0
    assert np.abs(heatmap).max() < 1e-3


def test_all_variants_and_the_original_go_through_in_one_call():
    predictor = CornerPredictor()
    occlusion_map(predictor, bright_corner_image())
    assert predictor.calls == [1 + 8 * 8]
    predictor.calls.clear()
    occlusion_map(predictor, bright_corner_image(), grid=4)
    assert predictor.calls == [1 + 4 * 4]


def test_the_prediction_matches_the_original_image_alone(tiny_onnx_model):
    predictor = Predictor(tiny_onnx_model, threads=1)
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    explanation = occlusion_map(predictor, image, top_k=4)
    alone = predictor.predict_images(image[None])[0]
    assert explanation.prediction.class_index == int(alone.argmax())
    assert explanation.prediction.probability == pytest.approx(float(alone.max()), rel=1e-5)
    assert len(explanation.prediction.top_k) == 4
    heatmap = np.asarray(explanation.heatmap)
    assert heatmap.shape == (8, 8) and heatmap.min() >= 0.0 and heatmap.max() == 1.0
    body = explanation.to_dict()
    assert body["class"] == explanation.prediction.class_name and body["grid"] == 8 and len(body["heatmap"]) == 8


def test_a_model_that_ignores_every_cell_gives_all_zeros():
    explanation = occlusion_map(ConstantPredictor(), bright_corner_image())
    assert np.asarray(explanation.heatmap).tolist() == [[0.0] * 8] * 8
    assert explanation.prediction.class_name == CLASSES[-1]


def test_masks_fill_each_cell_with_the_mean_and_leave_the_rest():
    inputs = normalize(np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    batch = occlusion_batch(inputs, 8, np.zeros(3, np.float32))
    assert batch.shape == (65, 3, 32, 32)
    np.testing.assert_array_equal(batch[0], inputs[0])
    for cell in (0, 9, 63):
        row, col = divmod(cell, 8)
        changed = batch[1 + cell] != inputs[0]
        assert changed[:, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4].all()
        changed[:, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] = False
        assert not changed.any()


def test_a_grid_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ValueError, match="grid of 5"):
        occlusion_map(CornerPredictor(), bright_corner_image(), grid=5)
    with pytest.raises(ValueError, match="32, 32, 3"):
        occlusion_map(CornerPredictor(), np.zeros((16, 16, 3), np.uint8))


def test_the_overlay_is_a_png_with_the_hot_cell_tinted_and_the_rest_untouched():
    image = bright_corner_image()
    heatmap = np.zeros((8, 8))
    heatmap[0, 0] = 1.0
    overlay = np.asarray(Image.open(io.BytesIO(render_overlay(image, heatmap.tolist()))).convert("RGB"))
    assert overlay.shape == (256, 256, 3)
    # Cell (0, 0) is 32x32 output pixels; white under yellow at 0.6 stays yellowish: full red and green, less blue.
    corner = overlay[:32, :32].reshape(-1, 3)
    assert (corner[:, 0] == 255).all() and (corner[:, 1] == 255).all() and (corner[:, 2] < 200).all()
    assert (overlay[32:, 32:] == 120).all()


def test_the_colour_ramp_goes_from_red_to_yellow():
    assert heat_colors(np.array([0.0, 1.0])).tolist() == [[255, 0, 0], [255, 255, 0]]

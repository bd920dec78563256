"""The int8 model shipped in the package: a fresh clone predicts and serves with no training and no download."""

import numpy as np
import pytest
from support import SHARED_ARCHIVE, png_bytes

from cifar10_classifier import CLASSES
from cifar10_classifier.inference import Predictor, bundled_model_path

pytestmark = pytest.mark.skipif(not bundled_model_path().is_file(), reason="no bundled model in this checkout")


def test_bundled_model_loads_with_its_card():
    predictor = Predictor()
    card = predictor.card
    assert tuple(card["classes"]) == CLASSES
    assert card["format"] == "onnx-int8" and card["recipe"] == "fast-large"
    assert card["accuracy"]["onnx_int8"] > 0.8  # a trained model, not chance (0.1)
    assert {"mean", "std", "resize_filter", "size"} <= set(card["input"])
    assert card["machine"]["cpu"] and card["train_seconds"] > 0


def test_bundled_model_classifies_real_test_images():
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"{SHARED_ARCHIVE} is absent: real test images unavailable")
    from cifar10_classifier.data import load_dataset

    dataset = load_dataset(SHARED_ARCHIVE)
    predictor = Predictor()
    # Two images per class, sent as PNG bytes through the same path the server uses.
    picks = np.concatenate([np.flatnonzero(np.asarray(dataset.test.labels) == c)[:2] for c in range(10)])
    correct = sum(
        predictor.predict_bytes(png_bytes(np.asarray(dataset.test.images_uint8[i]))).class_index
        == int(dataset.test.labels[i])
        for i in picks
    )
    assert correct >= 16, f"{correct}/20 correct"


def test_bundled_model_is_consistent_on_rendered_images():
    predictor = Predictor()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    first = predictor.predict_bytes(png_bytes(image), top_k=10)
    again = predictor.predict_bytes(png_bytes(image), top_k=10)
    assert first == again
    assert sum(p for _, p in first.top_k) == pytest.approx(1.0, abs=1e-4)


def test_bundled_model_is_calibrated_and_flags_images_of_no_class():
    predictor = Predictor()
    calibration, ood = predictor.card["calibration"], predictor.card["ood"]
    assert calibration["ece_after"] <= 0.02 < calibration["ece_before"]  # the target, on the test split
    assert "held-out" in calibration["fit_on"] and "test" not in calibration["fit_on"]
    assert ood["detector"] == "layer_statistics" and ood["keep_rate_target"] == 0.95
    assert 0.93 <= ood["test_kept"] <= 0.97 and "training images" in ood["gaussian_fit_on"]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    flat = np.full((32, 32, 3), (40, 160, 90), np.uint8)
    for image in (noise, flat):
        prediction = predictor.predict_bytes(png_bytes(image))
        assert prediction.in_distribution is False and prediction.ood_score > ood["threshold"]
    if SHARED_ARCHIVE.is_file():
        from cifar10_classifier.data import load_dataset

        test_images = np.asarray(load_dataset(SHARED_ARCHIVE).test.images_uint8[:200])
        kept = [predictor.predict_bytes(png_bytes(image)).in_distribution for image in test_images]
        assert 0.88 <= np.mean(kept) <= 1.0  # ~95% of in-distribution images kept

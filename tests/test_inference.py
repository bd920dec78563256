"""The torch-free Predictor over an ONNX file: its card, its numbers, and clear errors for bad model files."""

import json

import numpy as np
import pytest
from support import build_tiny_onnx, color_tile, png_bytes

from cifar10_classifier import CLASSES
from cifar10_classifier.errors import UserError
from cifar10_classifier.inference import ModelLoadError, Predictor, default_threads, softmax, top_k_of
from cifar10_classifier.preprocess import MEAN_RGB, normalize


def test_softmax_and_top_k_are_what_they_say():
    logits = np.array([[0.0, 1.0, 3.0] + [-9.0] * 7])
    probabilities = softmax(logits)
    assert probabilities.sum() == pytest.approx(1.0) and probabilities.argmax() == 2
    prediction = top_k_of(probabilities[0], CLASSES, k=2)
    assert (prediction.class_name, prediction.class_index) == ("bird", 2)
    assert [name for name, _ in prediction.top_k] == ["bird", "automobile"]
    assert len(top_k_of(probabilities[0], CLASSES, k=99).top_k) == 10  # clipped to the classes there are
    as_dict = prediction.to_dict()
    assert as_dict["class"] == "bird" and as_dict["top_k"][1]["class"] == "automobile"


def test_predictor_reads_its_card_and_predicts_bytes(tmp_path):
    card = {"name": "tiny", "version": "7", "classes": list(CLASSES), "input": {"mean": list(MEAN_RGB)}}
    predictor = Predictor(build_tiny_onnx(tmp_path / "tiny.onnx", card), threads=1)
    assert (predictor.name, predictor.version, predictor.classes) == ("tiny", "7", CLASSES)
    image = color_tile(3)
    np.testing.assert_allclose(predictor.normalize(image[None]), normalize(image[None]))
    prediction = predictor.predict_bytes(png_bytes(image), top_k=3)
    assert len(prediction.top_k) == 3 and sum(p for _, p in prediction.top_k) <= 1.0 + 1e-6
    np.testing.assert_allclose(predictor.predict_images(image[None]).sum(), 1.0, rtol=1e-5)


def test_a_card_beside_the_file_is_read_when_the_metadata_has_none(tmp_path):
    path = build_tiny_onnx(tmp_path / "bare.onnx")
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    assert Predictor(path, threads=1).name == "bare"  # no card at all: the file's name
    path.with_suffix(".json").write_text(json.dumps({"name": "beside", "version": "2"}))
    assert Predictor(path, threads=1).name == "beside"


def test_missing_or_damaged_model_files_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found; check the path"):
        Predictor(tmp_path / "nope.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Predictor(broken)
    assert issubclass(ModelLoadError, UserError)


def test_threads_split_the_cores_between_workers(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert (default_threads(), default_threads(2), default_threads(16)) == (8, 4, 1)

"""POST /explain: the heat map as JSON or PNG, and exactly /predict's answer to every bad input."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import serve_support as images
from PIL import Image
from serve_support import GatedPredictor, serving, upload

from cifar10_classifier import CLASSES
from cifar10_classifier.serve import model as served_model
from cifar10_classifier.serve.settings import Settings


def test_explain_answers_the_prediction_and_the_heat_map(client):
    response = client.post("/explain", files=upload(images.jpeg((96, 64)), "photo.jpg", "image/jpeg"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "class",
        "class_index",
        "probability",
        "top_k",
        "heatmap",
        "grid",
        "in_distribution",
        "ood_score",
        "model",
        "timing_ms",
    }
    assert body["class"] == CLASSES[body["class_index"]] and len(body["top_k"]) == 3
    assert body["grid"] == 8
    heatmap = np.asarray(body["heatmap"])
    assert heatmap.shape == (8, 8) and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert body["model"] == {"name": "tiny-test-model", "version": "0"}
    assert set(body["timing_ms"]) == {"decode", "inference", "total"}
    assert "inference;dur=" in response.headers["server-timing"]


def test_explain_predicts_what_predict_predicts(client):
    data = images.jpeg((300, 200))
    predicted = client.post("/predict?top_k=5", files=upload(data, "p.jpg", "image/jpeg")).json()
    explained = client.post("/explain?top_k=5", files=upload(data, "p.jpg", "image/jpeg")).json()
    assert explained["class"] == predicted["class"]
    assert explained["probability"] == pytest.approx(predicted["probability"], rel=1e-5)
    assert [entry["class"] for entry in explained["top_k"]] == [entry["class"] for entry in predicted["top_k"]]


def test_format_png_gives_the_overlay(client):
    response = client.post("/explain?format=png", files=upload(images.tile_png()))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.format == "PNG" and overlay.size == (256, 256)


@pytest.mark.parametrize("query", ["format=gif", "format=", "top_k=0", "top_k=11", "top_k=three"])
def test_a_bad_query_is_422(client, query):
    response = client.post(f"/explain?{query}", files=upload(images.tile_png()))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def _corrupt_png() -> bytes:
    data = bytearray(images.encode(images.photo((64, 64))))
    data[60:80] = b"\x00" * 20
    return bytes(data)


# The bad inputs of test_predict.py, each as a factory of request arguments (a streamed body is used up once).
BAD_INPUTS = {
    "no-file-field": (lambda: {"files": {"image": ("a.png", images.tile_png(), "image/png")}}, 422, "missing_file"),
    "only-text-fields": (lambda: {"data": {"note": "hi"}, "files": {"other": ("", b"", "")}}, 422, "missing_file"),
    "empty-file": (lambda: {"files": upload(b"")}, 422, "empty_file"),
    "not-an-image": (lambda: {"files": upload(b"hello, I am text", "notes.txt", "text/plain")}, 415, "not_image"),
    "truncated-jpeg": (lambda: {"files": upload(images.truncated_jpeg(), "cut.jpg")}, 422, "corrupt_image"),
    "corrupt-png": (lambda: {"files": upload(_corrupt_png())}, 422, "corrupt_image"),
    "decompression-bomb": (
        lambda: {"files": upload(images.png_claiming_size(60_000, 60_000))},
        413,
        "image_too_large",
    ),
    "over-the-pixel-limit": (
        lambda: {"files": upload(images.encode(images.photo((2500, 2000)), "JPEG", quality=50), "big.jpg")},
        413,
        "image_too_large",
    ),
    "over-the-upload-limit": (lambda: {"files": upload(b"\xff" * (3 * 1024 * 1024))}, 413, "upload_too_large"),
    "over-the-limit-streamed": (images.chunked_upload, 413, "upload_too_large"),
    "json-body": (
        lambda: {"content": b'{"image": "..."}', "headers": {"content-type": "application/json"}},
        415,
        "unsupported_media_type",
    ),
    "raw-png-body": (
        lambda: {"content": images.tile_png(), "headers": {"content-type": "image/png"}},
        415,
        "unsupported_media_type",
    ),
    "text-body": (
        lambda: {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "no-content-type": (lambda: {"content": b"raw"}, 415, "unsupported_media_type"),
    "no-boundary-in-body": (
        lambda: {"content": b"no boundary anywhere", "headers": {"content-type": "multipart/form-data; boundary=B"}},
        400,
        "malformed_multipart",
    ),
    "no-closing-boundary": (
        lambda: {
            "content": b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nunterminated',
            "headers": {"content-type": "multipart/form-data; boundary=B"},
        },
        400,
        "malformed_multipart",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_every_bad_input_gets_the_same_answer_as_predict(client, name):
    make, status, code = BAD_INPUTS[name]
    answers = {path: client.post(path, **make()) for path in ("/predict", "/explain")}
    for path, response in answers.items():
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"]["code"] == code, (path, response.text)
    assert answers["/explain"].json() == answers["/predict"].json()


def test_a_bad_input_with_format_png_still_answers_json(client):
    response = client.post("/explain?format=png", files=upload(b"not an image", "x.txt", "text/plain"))
    assert response.status_code == 415 and response.headers["content-type"].startswith("application/json")


def test_explain_does_not_go_through_the_micro_batcher(client, monkeypatch):
    async def refuse(item):
        raise AssertionError("/explain sent its batch to the micro-batcher")

    monkeypatch.setattr(client.app.state.context, "infer", refuse)
    assert client.post("/explain", files=upload(images.tile_png())).status_code == 200


def test_the_event_loop_answers_while_an_explanation_runs(tiny_model):
    gated = GatedPredictor(tiny_model)
    with serving(Settings(model=tiny_model, warmup_runs=0), predictor=gated) as client:
        answers: dict = {}
        worker = threading.Thread(
            target=lambda: answers.update(explained=client.post("/explain", files=upload(images.tile_png())))
        )
        worker.start()
        try:
            for _ in range(500):  # until the explanation is inside the model call, holding its thread
                if gated.calls:
                    break
                threading.Event().wait(0.01)
            assert gated.calls == 1
            assert client.get("/healthz").status_code == 200
        finally:
            gated.gate.set()
            worker.join(10)
        assert answers["explained"].status_code == 200


def test_without_a_model_explain_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(served_model, "bundled_model_path", lambda: tmp_path / "absent" / "model-int8.onnx")
    with serving(Settings(model=None), ready=False) as client:
        client.portal.call(client.app.state.context.wait_loaded)
        response = client.post("/explain", files=upload(images.tile_png()))
        assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"


def test_explain_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").json()["paths"]["/explain"]["post"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {"top_k", "format"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "image/png"}
    assert "multipart/form-data" in operation["requestBody"]["content"]

"""The Open Inference Protocol v2 routes, as KServe and Triton clients call them."""

from __future__ import annotations

import numpy as np
import pytest
import serve_support as images

from cifar10_classifier.inference import Predictor


def infer_body(array: np.ndarray, datatype: str, nested: bool = False, **extra) -> dict:
    data = array.tolist() if nested else array.ravel().tolist()
    return {"inputs": [{"name": "input", "shape": list(array.shape), "datatype": datatype, "data": data}], **extra}


def test_server_metadata_and_health(client):
    meta = client.get("/v2").json()
    assert meta["name"] == "cifar10-classifier" and "version" in meta and meta["extensions"] == []
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("name", ["tiny-test-model", "cifar10"])
def test_model_metadata_by_name_or_alias(client, name):
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["name"] == "tiny-test-model" and meta["versions"] == ["0"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get(f"/v2/models/{name}/ready").json() == {"ready": True}


def test_an_unknown_model_is_404(client):
    for path in ("/v2/models/resnet", "/v2/models/resnet/ready"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model"
    assert client.post("/v2/models/resnet/infer", json=infer_body(np.zeros((1, 3, 32, 32)), "FP32")).status_code == 404


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_fp32_infer_matches_the_predictor(client, tiny_model, nested):
    predictor = Predictor(tiny_model)
    pixels = np.stack([images.color_tile(index) for index in range(4)])  # (4, 32, 32, 3)
    normalized = predictor.normalize(pixels)  # (4, 3, 32, 32)
    response = client.post("/v2/models/cifar10/infer", json=infer_body(normalized, "FP32", nested, id="req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "tiny-test-model" and body["model_version"] == "0" and body["id"] == "req-1"
    [output] = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [4, 10]
    expected = predictor.predict_images(pixels)
    np.testing.assert_allclose(np.array(output["data"]).reshape(4, 10), expected, rtol=1e-4, atol=1e-6)


def test_uint8_infer_is_normalized_by_the_server(client, tiny_model):
    pixels = np.stack([images.color_tile(index) for index in range(3)])  # (3, 32, 32, 3)
    response = client.post("/v2/models/cifar10/infer", json=infer_body(pixels, "UINT8"))
    assert response.status_code == 200, response.text
    expected = Predictor(tiny_model).predict_images(pixels)
    np.testing.assert_allclose(np.array(response.json()["outputs"][0]["data"]).reshape(3, 10), expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": []}, "one tensor"),
        ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP16", "data": []}]}, "datatype"),
        ({"inputs": [{"name": "input", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [0] * 3072}]}, "shape"),
        ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0] * 10}]}, "needs 3072"),
        (
            {"inputs": [{"name": "input", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": [300] * 3072}]},
            "0 to 255",
        ),
        ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ["a"] * 3072}]}, "numbers"),
        ({"inputs": [{"name": "input", "shape": [0, 3, 32, 32], "datatype": "FP32", "data": []}]}, "1 <= N"),
        (
            {
                "inputs": [{"name": "i", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0] * 3072}],
                "outputs": [{"name": "logits"}],
            },
            "only output",
        ),
    ],
)
def test_bad_tensors_are_422_with_a_reason(client, body, fragment):
    response = client.post("/v2/models/cifar10/infer", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_tensor" and fragment in error["message"]


def test_not_json_is_400_and_a_wrong_content_type_is_415(client):
    response = client.post("/v2/models/cifar10/infer", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = client.post("/v2/models/cifar10/infer", content=b"x", headers={"content-type": "text/csv"})
    assert response.status_code == 415


def test_a_model_with_a_detector_answers_ood_score_and_in_distribution(tmp_path):
    from serve_support import serving

    from cifar10_classifier.serve.settings import Settings

    model = images.build_tiny_onnx(tmp_path / "tiny-ood.onnx", ood_threshold=1.0)
    predictor = Predictor(model)
    pixels = np.stack([images.color_tile(index) for index in range(10)])  # (10, 32, 32, 3)
    _, scores = predictor.probabilities_and_ood(predictor.normalize(pixels))
    with serving(Settings(model=model)) as client:
        meta = client.get("/v2/models/cifar10").json()
        assert [output["name"] for output in meta["outputs"]] == ["probabilities", "ood_score", "in_distribution"]
        assert meta["outputs"][2] == {"name": "in_distribution", "datatype": "BOOL", "shape": [-1]}
        body = client.post("/v2/models/cifar10/infer", json=infer_body(pixels, "UINT8")).json()
        outputs = {output["name"]: output for output in body["outputs"]}
        assert list(outputs) == ["probabilities", "ood_score", "in_distribution"]
        assert outputs["ood_score"]["datatype"] == "FP32" and outputs["ood_score"]["shape"] == [10]
        np.testing.assert_allclose(outputs["ood_score"]["data"], scores, rtol=1e-5)
        assert outputs["in_distribution"]["datatype"] == "BOOL" and outputs["in_distribution"]["shape"] == [10]
        assert outputs["in_distribution"]["data"] == (scores <= 1.0).tolist()
        assert len(set(outputs["in_distribution"]["data"])) == 2
        # A request may pick its outputs.
        picked = client.post(
            "/v2/models/cifar10/infer", json=infer_body(pixels, "UINT8", outputs=[{"name": "in_distribution"}])
        ).json()
        assert [output["name"] for output in picked["outputs"]] == ["in_distribution"]

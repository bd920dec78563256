"""The answers as typed results: parsed strictly, so a server that is not this API fails with one clear error."""

from __future__ import annotations

import pytest
from stub_server import PREDICTION, Answer, stub_server

from cifar10_classifier.client import ClassProbability, Client, ClientError, ModelInfo, Prediction, Timing
from cifar10_classifier.client.results import ResponseShapeError, prediction_from_json


def test_a_predict_answer_becomes_frozen_dataclasses():
    prediction = prediction_from_json(PREDICTION)
    assert prediction == Prediction(
        class_name="cat",
        class_index=3,
        probability=0.875,
        top_k=(ClassProbability("cat", 0.875), ClassProbability("dog", 0.1)),
        in_distribution=True,
        ood_score=-12.5,
        model=ModelInfo("stub", "1"),
        timing_ms=Timing(decode=0.5, inference=1.25, total=2.0),
    )
    with pytest.raises(AttributeError):
        prediction.class_name = "dog"  # type: ignore[misc]
    # to_dict is the JSON's classification, the same dict a local Predictor's prediction gives
    assert prediction.to_dict() == {key: PREDICTION[key] for key in prediction.to_dict()}
    assert set(prediction.to_dict()) == {"class", "class_index", "probability", "top_k", "in_distribution", "ood_score"}


def test_a_model_without_a_detector_gives_none_and_unknown_fields_are_ignored():
    body = {**PREDICTION, "in_distribution": None, "ood_score": None, "added_later": [1, 2]}
    prediction = prediction_from_json(body)
    assert prediction.in_distribution is None and prediction.ood_score is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"class": None}, '"class"'),
        ({"class_index": "3"}, '"class_index"'),
        ({"class_index": True}, '"class_index"'),
        ({"probability": "high"}, '"probability"'),
        ({"top_k": []}, '"top_k"'),
        ({"top_k": [{"class": "cat"}]}, '"probability"'),
        ({"in_distribution": "yes"}, '"in_distribution"'),
        ({"timing_ms": None}, '"timing_ms"'),
        ({"model": {"name": "x"}}, '"version"'),
    ],
)
def test_a_wrong_field_is_named(change, field):
    with pytest.raises(ResponseShapeError, match=field):
        prediction_from_json({**PREDICTION, **change})


def test_a_success_that_is_not_this_api_raises_invalid_response():
    with stub_server(Answer(200, {"hello": "world"})) as stub, pytest.raises(ClientError) as raised:
        Client(stub.url).predict(b"image bytes")
    assert (raised.value.code, raised.value.status) == ("invalid_response", 200)
    assert '"top_k"' in raised.value.message and "is it this server?" in raised.value.message


def test_an_error_page_that_is_not_json_keeps_its_status_and_text():
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with stub_server(Answer(502, page)) as stub, pytest.raises(ClientError) as raised:
        Client(stub.url).predict(b"image bytes")
    assert (raised.value.code, raised.value.status) == ("http_error", 502)
    assert "Bad Gateway" in raised.value.message
    assert str(raised.value).startswith("HTTP 502 http_error: ")


def test_a_batch_with_the_wrong_number_of_results_raises_invalid_response():
    batch = {"results": [], "model": {"name": "stub", "version": "1"}}
    with stub_server(Answer(200, batch)) as stub, pytest.raises(ClientError) as raised:
        Client(stub.url).predict_many([b"one", b"two"])
    assert raised.value.code == "invalid_response" and "2 files" in raised.value.message

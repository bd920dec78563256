"""Retries on 429 and 503, against a scripted stub server: Retry-After honoured, attempts and total wait bounded.
No test sleeps: the client's `sleep` records the waits instead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from stub_server import Answer, stub_server, too_many_requests

from cifar10_classifier.client import Client, ClientError, Prediction, RetryPolicy
from cifar10_classifier.client.retries import next_wait_s, retry_after_s


def recording_client(url: str, **options) -> tuple[Client, list[float]]:
    waits: list[float] = []
    return Client(url, sleep=waits.append, **options), waits


def test_a_429_with_retry_after_is_retried_after_that_long():
    with stub_server(too_many_requests("1"), Answer()) as stub:
        client, waits = recording_client(stub.url)
        prediction = client.predict(b"image bytes", top_k=2)
    assert isinstance(prediction, Prediction) and prediction.class_name == "cat"
    assert waits == [1.0]
    assert stub.requests == ["POST /predict?top_k=2", "POST /predict?top_k=2"]


def test_retries_stop_after_max_attempts_with_the_servers_429():
    with stub_server(too_many_requests("1")) as stub:
        client, waits = recording_client(stub.url, retry=RetryPolicy(max_attempts=3, max_total_wait_s=60))
        with pytest.raises(ClientError) as raised:
            client.predict(b"image bytes")
    assert (raised.value.status, raised.value.code) == (429, "too_many_requests")
    assert "retry shortly" in raised.value.message
    assert waits == [1.0, 1.0] and len(stub.requests) == 3


def test_a_retry_after_beyond_the_total_wait_gives_up_at_once():
    with stub_server(too_many_requests("120")) as stub:
        client, waits = recording_client(stub.url, retry=RetryPolicy(max_total_wait_s=10))
        with pytest.raises(ClientError) as raised:
            client.predict(b"image bytes")
    assert raised.value.status == 429 and waits == [] and len(stub.requests) == 1


def test_a_503_without_retry_after_backs_off_doubling_within_the_total_wait():
    unavailable = Answer(503, {"error": {"code": "model_unavailable", "message": "the model is loading"}})
    with stub_server(unavailable) as stub:
        policy = RetryPolicy(max_attempts=10, max_total_wait_s=3.5, backoff_s=0.5)
        client, waits = recording_client(stub.url, retry=policy)
        with pytest.raises(ClientError) as raised:
            client.predict(b"image bytes")
    assert (raised.value.status, raised.value.code) == (503, "model_unavailable")
    assert waits == [0.5, 1.0, 2.0]  # the next, 4.0, would pass 3.5 s in all
    assert len(stub.requests) == 4


def test_other_errors_are_not_retried():
    with stub_server(Answer(500, {"error": {"code": "internal_error", "message": "internal server error"}})) as stub:
        client, waits = recording_client(stub.url)
        with pytest.raises(ClientError) as raised:
            client.predict(b"image bytes")
    assert raised.value.code == "internal_error" and waits == [] and len(stub.requests) == 1


def test_one_attempt_never_retries():
    with stub_server(too_many_requests("0"), Answer()) as stub:
        client, waits = recording_client(stub.url, retry=RetryPolicy(max_attempts=1))
        with pytest.raises(ClientError):
            client.predict(b"image bytes")
    assert waits == [] and len(stub.requests) == 1


def test_predict_many_retries_each_request():
    batch = {
        "results": [{k: v for k, v in Answer().body.items() if k != "model"}],
        "model": {"name": "s", "version": "1"},
    }
    with stub_server(too_many_requests("1"), Answer(body=batch)) as stub:
        client, waits = recording_client(stub.url)
        [entry] = client.predict_many([b"image bytes"])
    assert isinstance(entry, Prediction) and entry.model.name == "s" and waits == [1.0]
    assert stub.requests == ["POST /predict/batch", "POST /predict/batch"]


def test_ready_is_false_on_503_and_is_not_retried():
    with stub_server(Answer(503, {"error": {"code": "model_unavailable", "message": "loading"}})) as stub:
        client, waits = recording_client(stub.url)
        assert client.ready() is False
    assert waits == [] and stub.requests == ["GET /readyz"]


def test_a_call_slower_than_the_timeout_raises_timeout():
    with stub_server(Answer(delay_s=2.0)) as stub:
        client, _ = recording_client(stub.url, timeout_s=0.2)
        with pytest.raises(ClientError) as raised:
            client.predict(b"image bytes")
    assert raised.value.code == "timeout" and raised.value.status is None
    assert "0.2 s" in raised.value.message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        ("Thu, 03 Dec 2026 12:00:30 GMT", 30.0),
        ("Thu, 03 Dec 2026 11:00:00 GMT", 0.0),  # a date in the past: retry now
        (None, None),
        ("soon", None),
        ("-1", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header, seconds):
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s(header, now=now) == seconds


def test_next_wait_counts_attempts_and_the_total_wait():
    policy = RetryPolicy(max_attempts=3, max_total_wait_s=5.0, backoff_s=1.0)
    assert next_wait_s(policy, 1, None, 0.0) == 1.0
    assert next_wait_s(policy, 2, None, 1.0) == 2.0
    assert next_wait_s(policy, 3, None, 3.0) is None  # out of attempts
    assert next_wait_s(policy, 1, 4.0, 0.0) == 4.0
    assert next_wait_s(policy, 2, 4.0, 4.0) is None  # 8 s in all would pass 5


def test_a_retry_policy_refuses_impossible_bounds():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="0 or more"):
        RetryPolicy(max_total_wait_s=-1)

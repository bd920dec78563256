"""The client against a real `cifar10 serve` process on the bundled model: good files, bad files, the upload
limit, readiness, and a server that is not there."""

from __future__ import annotations

import io
import socket
import time

import httpx
import numpy as np
import pytest
from support import free_port, png_bytes, server_process

from cifar10_classifier import CLASSES
from cifar10_classifier.client import Client, ClientError, FailedPrediction, Prediction, RetryPolicy

pytestmark = pytest.mark.slow


def photo_jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, size=(6, 8, 3)).repeat(40, axis=0).repeat(40, axis=1).astype(np.uint8)
    return png_bytes(smooth, fmt="JPEG")


def server_json(url: str, path: str, data: bytes, **params) -> dict:
    return httpx.post(f"{url}{path}", params=params, files={"file": ("a.jpg", data, "image/jpeg")}, timeout=10).json()


def test_predict_takes_a_path_bytes_or_a_file_and_answers_the_servers_fields(bundled_server, tmp_path):
    data = photo_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with Client(bundled_server) as client:
        from_path = client.predict(path, top_k=3)
        from_str = client.predict(str(path), top_k=3)
        from_bytes = client.predict(data, top_k=3)
        with path.open("rb") as file:
            from_file = client.predict(file, top_k=3)
        from_buffer = client.predict(io.BytesIO(data), top_k=3)
    assert isinstance(from_path, Prediction)
    assert {p.to_dict()["class"] for p in (from_path, from_str, from_bytes, from_file, from_buffer)} == {
        from_path.class_name
    }
    body = server_json(bundled_server, "/predict", data, top_k=3)
    assert from_path.to_dict() == {key: body[key] for key in from_path.to_dict()}
    assert from_path.class_name in CLASSES and from_path.class_name == CLASSES[from_path.class_index]
    assert from_path.top_k[0].class_name == from_path.class_name and len(from_path.top_k) == 3
    assert isinstance(from_path.in_distribution, bool) and isinstance(from_path.ood_score, float)  # it has a detector
    assert (from_path.model.name, from_path.model.version) == (body["model"]["name"], body["model"]["version"])
    assert from_path.timing_ms.total is not None and from_path.timing_ms.total >= from_path.timing_ms.inference


def test_top_k_defaults_to_the_servers(bundled_server):
    assert len(Client(bundled_server).predict(photo_jpeg()).top_k) == 3


def test_a_file_that_is_not_an_image_raises_the_servers_code_and_message(bundled_server):
    with pytest.raises(ClientError) as raised:
        Client(bundled_server).predict(b"this is not an image")
    error = server_json(bundled_server, "/predict", b"this is not an image")["error"]
    assert (raised.value.status, raised.value.code, raised.value.message) == (415, error["code"], error["message"])


def test_a_truncated_image_raises_corrupt_image(bundled_server):
    data = photo_jpeg()
    with pytest.raises(ClientError) as raised:
        Client(bundled_server).predict(data[: len(data) // 2])
    assert (raised.value.status, raised.value.code) == (422, "corrupt_image")


def test_a_top_k_the_server_refuses_raises_invalid_request(bundled_server):
    with pytest.raises(ClientError) as raised:
        Client(bundled_server).predict(photo_jpeg(), top_k=11)
    assert (raised.value.status, raised.value.code) == (422, "invalid_request") and "top_k" in raised.value.message


def test_an_upload_over_the_limit_raises_413(bundled_server):
    with pytest.raises(ClientError) as raised:
        Client(bundled_server).predict(b"\x00" * 400_000)  # the fixture's limit is 300 kB
    assert (raised.value.status, raised.value.code) == (413, "upload_too_large")


def test_a_file_that_cannot_be_read_raises_before_any_request(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ClientError) as raised:
        Client("http://127.0.0.1:9").predict(missing)  # nothing listens there: no request is made
    assert (raised.value.status, raised.value.code) == (None, "unreadable_file")
    assert str(missing) in raised.value.message and "No such file" in raised.value.message


def test_a_text_mode_file_is_a_type_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("text")
    with path.open() as file, pytest.raises(TypeError, match="binary mode"):
        Client("http://127.0.0.1:9").predict(file)


def test_predict_many_answers_each_image_in_order(bundled_server, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(photo_jpeg(1))
    missing = tmp_path / "missing.jpg"
    images = [good, b"not an image", missing, photo_jpeg(2), photo_jpeg(3)]
    with Client(bundled_server, files_per_request=2) as client:
        results = client.predict_many(images, top_k=2)
        one_by_one = [client.predict(image, top_k=2) for image in (good, images[3], images[4])]
    kinds = [type(result) for result in results]
    assert kinds == [Prediction, FailedPrediction, FailedPrediction, Prediction, Prediction]
    assert results[1].code == "not_image"
    assert results[2] == FailedPrediction("unreadable_file", "No such file or directory")
    predictions = [results[0], results[3], results[4]]
    assert [p.to_dict()["class"] for p in predictions] == [p.class_name for p in one_by_one]
    assert all(len(p.top_k) == 2 and p.model == one_by_one[0].model and p.timing_ms.total is None for p in predictions)


def test_predict_many_splits_a_request_over_the_servers_limit(bundled_server):
    """Our default budget is 8 MiB a request, the fixture's server takes 300 kB: halving finds what fits, and the
    file over the limit by itself is the only failure."""
    images = [photo_jpeg(4), b"\x00" * 400_000, photo_jpeg(5), photo_jpeg(6)]
    results = Client(bundled_server).predict_many(images)
    assert [type(result) for result in results] == [Prediction, FailedPrediction, Prediction, Prediction]
    assert results[1].code == "upload_too_large"


def test_predict_many_of_nothing_asks_nothing_and_one_image_is_a_type_error(tmp_path):
    client = Client("http://127.0.0.1:9")  # nothing listens there: no request is made
    assert client.predict_many([]) == []
    with pytest.raises(TypeError, match="predict takes one"):
        client.predict_many(str(tmp_path / "photo.jpg"))


def test_ready_is_true_on_a_warm_server(bundled_server):
    with Client(bundled_server) as client:
        assert client.ready() is True


def test_a_server_that_is_not_up_raises_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    client = Client(url)
    for call in (lambda: client.predict(b"image bytes"), client.ready, lambda: client.predict_many([b"image"])):
        with pytest.raises(ClientError) as raised:
            call()
        assert (raised.value.status, raised.value.code) == (None, "connection_failed")
        assert str(raised.value).startswith(f"cannot connect to {url}: ") and "is the server running" in str(
            raised.value
        )


def test_an_address_that_is_no_url_raises_one_clear_error(capsys):
    from cifar10_classifier.cli import main

    with pytest.raises(ClientError) as raised:
        Client("http://host:abc")
    assert raised.value.code == "invalid_url" and "give one like http://host:8000" in str(raised.value)
    assert main(["predict", "x.png", "--url", "http://host:abc"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_client_error_is_a_user_error_so_the_cli_prints_one_line():
    from cifar10_classifier.errors import UserError

    assert issubclass(ClientError, UserError)
    assert str(ClientError("no answer", code="timeout")) == "no answer"
    assert str(ClientError("too big", code="upload_too_large", status=413)) == "HTTP 413 upload_too_large: too big"


def test_a_real_servers_429_is_retried_after_its_retry_after(tmp_path):
    """A server that admits one request at a time, its slot held by an upload that stalls mid-body: the client's
    request gets the real 429 with Retry-After, and is retried after that long once the slot is free."""
    with server_process("--workers", "1", "--max-in-flight", "1") as (base, _):
        port = int(base.rsplit(":", 1)[1])
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        try:
            with pytest.raises(ClientError) as refused:
                Client(base, retry=RetryPolicy(max_attempts=1)).predict(photo_jpeg())
            assert refused.value.status == 429 and refused.value.code == "too_many_requests"

            waits: list[float] = []

            def free_the_slot_then_wait(seconds: float) -> None:
                waits.append(seconds)
                stalled.close()  # the stalled upload ends; its slot is free when the client asks again
                time.sleep(min(seconds, 0.5))

            prediction = Client(base, retry=RetryPolicy(max_attempts=3), sleep=free_the_slot_then_wait).predict(
                photo_jpeg()
            )
            assert prediction.class_name in CLASSES and waits == [1.0]  # the server's Retry-After: 1
        finally:
            stalled.close()

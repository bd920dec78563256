"""POST /predict and /predict/batch: answers, accepted image kinds, and every bad input in the issue."""

from __future__ import annotations

import pytest
import serve_support as images
from serve_support import serving, upload

from cifar10_classifier import CLASSES
from cifar10_classifier.serve.settings import Settings


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def test_predict_answers_the_documented_shape(client):
    response = client.post("/predict", files=upload(images.tile_png()))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "class",
        "class_index",
        "probability",
        "top_k",
        "in_distribution",
        "ood_score",
        "model",
        "timing_ms",
    }
    assert body["in_distribution"] is None and body["ood_score"] is None  # the tiny model has no detector
    assert body["class"] == CLASSES[body["class_index"]]
    assert len(body["top_k"]) == 3
    assert body["top_k"][0] == {"class": body["class"], "probability": body["probability"]}
    assert [entry["probability"] for entry in body["top_k"]] == sorted(
        (entry["probability"] for entry in body["top_k"]), reverse=True
    )
    assert body["model"] == {"name": "tiny-test-model", "version": "0"}
    assert set(body["timing_ms"]) == {"decode", "inference", "total"}
    assert all(value >= 0 for value in body["timing_ms"].values())


@pytest.mark.parametrize("k", [1, 5, 10])
def test_top_k_sets_how_many_classes(client, k):
    body = client.post(f"/predict?top_k={k}", files=upload(images.tile_png())).json()
    assert len(body["top_k"]) == k
    if k == 10:
        assert sum(entry["probability"] for entry in body["top_k"]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("k", ["0", "11", "-1", "three"])
def test_a_bad_top_k_is_422(client, k):
    assert_error(client.post(f"/predict?top_k={k}", files=upload(images.tile_png())), 422, "invalid_request")


def test_same_image_same_answer_as_the_predictor(client, tiny_model):
    from cifar10_classifier.inference import Predictor

    data = images.jpeg((300, 200))
    expected = Predictor(tiny_model).predict_bytes(data, top_k=3).to_dict()
    body = client.post("/predict", files=upload(data, "photo.jpg", "image/jpeg")).json()
    assert body["class"] == expected["class"]
    assert body["probability"] == pytest.approx(expected["probability"], rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        images.png_16bit,
        images.cmyk_jpeg,
        images.palette_png,
        images.grayscale_png,
        images.alpha_png,
        images.animated_gif,
        lambda: images.jpeg((640, 480)),
        lambda: images.encode(images.photo(), "WEBP"),
        lambda: images.encode(images.photo(), "BMP"),
        lambda: images.encode(images.photo(), "TIFF"),
    ],
    ids=["16-bit", "cmyk", "palette", "grayscale", "alpha", "animated-gif", "photo", "webp", "bmp", "tiff"],
)
def test_every_common_kind_of_image_is_accepted_and_converted(client, make):
    response = client.post("/predict", files=upload(make(), "upload.bin", "application/octet-stream"))
    assert response.status_code == 200, response.text
    assert response.json()["class"] in CLASSES


def test_the_upload_content_type_of_the_part_does_not_matter(client):
    # Browsers send whatever the OS guesses; the bytes decide.
    response = client.post("/predict", files={"file": ("x", images.tile_png(), "text/plain")})
    assert response.status_code == 200


def test_no_file_field_is_422(client):
    error = assert_error(
        client.post("/predict", files={"image": ("a.png", images.tile_png(), "image/png")}), 422, "missing_file"
    )
    assert '"file"' in error["message"]


def test_a_form_with_only_text_fields_is_422(client):
    assert_error(client.post("/predict", data={"note": "hello"}, files={"other": ("", b"", "")}), 422, "missing_file")


def test_an_empty_file_is_422(client):
    assert_error(client.post("/predict", files=upload(b"")), 422, "empty_file")


def test_not_an_image_is_415(client):
    error = assert_error(
        client.post("/predict", files=upload(b"hello, I am text", "notes.txt", "text/plain")), 415, "not_image"
    )
    assert "not an image" in error["message"]


def test_a_truncated_jpeg_is_422_and_says_so(client):
    error = assert_error(
        client.post("/predict", files=upload(images.truncated_jpeg(), "cut.jpg")), 422, "corrupt_image"
    )
    assert "truncated" in error["message"]


def test_a_corrupt_png_is_422(client):
    data = bytearray(images.encode(images.photo((64, 64))))
    data[60:80] = b"\x00" * 20  # inside the first IDAT: the CRC and the stream break
    assert_error(client.post("/predict", files=upload(bytes(data))), 422, "corrupt_image")


def test_a_decompression_bomb_is_413_before_it_is_decoded(client):
    error = assert_error(
        client.post("/predict", files=upload(images.png_claiming_size(60_000, 60_000))), 413, "image_too_large"
    )
    assert "pixels" in error["message"] or "too large" in error["message"]


def test_an_image_over_the_pixel_limit_is_413(client):
    # The module's client allows 4 megapixels; this one is 5.
    data = images.encode(images.photo((2500, 2000)), "JPEG", quality=50)
    assert_error(client.post("/predict", files=upload(data, "big.jpg")), 413, "image_too_large")


def test_an_upload_over_the_limit_is_413_from_content_length(client):
    big = b"\xff" * (3 * 1024 * 1024)
    assert_error(client.post("/predict", files=upload(big)), 413, "upload_too_large")


def test_an_upload_over_the_limit_is_413_while_streaming(client):
    # Chunked transfer: no Content-Length, so the limit must be counted as the bytes arrive.
    assert_error(client.post("/predict", **images.chunked_upload()), 413, "upload_too_large")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b'{"image": "..."}'), ("image/png", None), ("text/plain", b"hello"), (None, b"raw")],
)
def test_a_wrong_request_content_type_is_415(client, content_type, body):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=body if body is not None else images.tile_png(), headers=headers)
    error = assert_error(response, 415, "unsupported_media_type")
    assert "multipart/form-data" in error["message"]


@pytest.mark.parametrize(
    "body",
    [b"no boundary anywhere", b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nunterminated'],
    ids=["no-boundary", "no-closing-boundary"],
)
def test_a_malformed_multipart_body_is_400(client, body):
    response = client.post("/predict", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert_error(response, 400, "malformed_multipart")


def test_a_hostile_filename_is_never_echoed(client):
    name = '<script>alert(1)</script>".png'
    response = client.post("/predict", files=upload(b"not an image", name))
    assert "<script>" not in response.text


def test_batch_answers_each_file_in_order_and_fails_only_the_bad_ones(client):
    files = [
        ("files", ("a.png", images.tile_png(1), "image/png")),
        ("files", ("b.txt", b"not an image", "text/plain")),
        ("files", ("c.jpg", images.truncated_jpeg(), "image/jpeg")),
        ("files", ("d.png", b"", "image/png")),
        ("files", ("e.png", images.tile_png(8), "image/png")),
    ]
    response = client.post("/predict/batch?top_k=2", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [next(iter(result)) if "error" in result else "ok" for result in results] == [
        "ok",
        "error",
        "error",
        "error",
        "ok",
    ]
    assert [results[i]["error"]["code"] for i in (1, 2, 3)] == ["not_image", "corrupt_image", "empty_file"]
    single = [client.post("/predict?top_k=2", files=upload(images.tile_png(i))).json() for i in (1, 8)]
    for result, alone in zip((results[0], results[4]), single, strict=True):
        assert result["class"] == alone["class"] and len(result["top_k"]) == 2
        assert result["probability"] == pytest.approx(alone["probability"], rel=1e-5)


def test_batch_accepts_the_file_field_name_too(client):
    files = [("file", ("a.png", images.tile_png(), "image/png"))] * 3
    assert len(client.post("/predict/batch", files=files).json()["results"]) == 3


def test_batch_without_files_is_422_and_with_too_many_is_413(tiny_model):
    with serving(Settings(model=tiny_model, max_files_per_request=2)) as client:
        assert_error(client.post("/predict/batch", files={"x": ("a", b"1", "text/plain")}), 422, "missing_file")
        files = [("files", ("a.png", images.tile_png(), "image/png"))] * 3
        assert_error(client.post("/predict/batch", files=files), 413, "too_many_files")


def test_the_server_stays_up_after_bad_input(client):
    for data in (b"", b"junk", images.truncated_jpeg(), images.png_claiming_size(50_000, 50_000)):
        client.post("/predict", files=upload(data))
    assert client.post("/predict", files=upload(images.tile_png())).status_code == 200


@pytest.fixture(scope="module")
def ood_client(tmp_path_factory):
    """A model with an "ood_score" output and its threshold in the card: the squared norm of the mean colour."""
    model = images.build_tiny_onnx(tmp_path_factory.mktemp("ood-model") / "tiny-ood.onnx", ood_threshold=1.0)
    with serving(Settings(model=model)) as client:
        yield client, model


def test_predict_and_batch_carry_the_off_distribution_fields(ood_client):
    from cifar10_classifier.inference import Predictor

    client, model = ood_client
    predictor = Predictor(model)
    tiles = [images.tile_png(i) for i in range(10)]
    expected = [predictor.predict_bytes(data).to_dict() for data in tiles]
    assert {item["in_distribution"] for item in expected} == {True, False}  # the threshold splits the tiles
    for data, want in zip(tiles, expected, strict=True):
        body = client.post("/predict", files=upload(data)).json()
        assert body["in_distribution"] is want["in_distribution"]
        assert body["ood_score"] == pytest.approx(want["ood_score"], rel=1e-5)
        assert body["in_distribution"] is (body["ood_score"] <= 1.0)
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(tiles)] + [
        ("files", ("bad.txt", b"not an image", "text/plain"))
    ]
    results = client.post("/predict/batch", files=files).json()["results"]
    for result, want in zip(results, expected, strict=False):
        assert result["in_distribution"] is want["in_distribution"]
        assert result["ood_score"] == pytest.approx(want["ood_score"], rel=1e-5)
    assert "in_distribution" not in results[-1] and "error" in results[-1]

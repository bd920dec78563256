"""Mangled images of every format: always a clear 2xx or 4xx answer, never a 500, and the server stays up."""

from __future__ import annotations

import serve_support as images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import upload

SEEDS = {
    "png": images.encode(images.photo((48, 40))),
    "jpeg": images.jpeg((96, 64)),
    "gif": images.animated_gif(),
    "webp": images.encode(images.photo((40, 40)), "WEBP"),
    "tiff": images.encode(images.photo((24, 24)), "TIFF"),
    "bmp": images.encode(images.photo((24, 24)), "BMP"),
}


@st.composite
def mangled(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 64))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mangled())
def test_mangled_images_get_a_clear_answer(client, data):
    response = client.post("/predict", files=upload(data, "mangled.bin", "application/octet-stream"))
    assert response.status_code in (200, 413, 415, 422), response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"] in {"empty_file", "not_image", "corrupt_image", "image_too_large"}

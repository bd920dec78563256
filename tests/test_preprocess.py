"""Image bytes -> the network's input: decode safely, orient, make RGB, resize, normalize."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cifar10_classifier.preprocess import (
    IMAGE_SIZE,
    MEAN_RGB,
    RESIZE_FILTER,
    STD_RGB,
    DecodeOptions,
    ImageDecodeError,
    decode_image,
    normalize,
    preprocess,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def save(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_by_hand(width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"") -> bytes:
    """A PNG written chunk by chunk: for layouts Pillow cannot save (48-bit RGB) and headers of huge canvases."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def two_halves(width: int = 64, height: int = 64) -> Image.Image:
    """Red on top, blue below: any rotation or flip shows."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 2] = RED
    array[height // 2 :] = BLUE
    return Image.fromarray(array)


def region_colours(decoded: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Mean colour of the middle of each edge, rounded to the nearest 'pure' value."""
    half = IMAGE_SIZE // 2
    regions = {
        "top": decoded[:8, half - 4 : half + 4],
        "bottom": decoded[-8:, half - 4 : half + 4],
        "left": decoded[half - 4 : half + 4, :8],
        "right": decoded[half - 4 : half + 4, -8:],
    }
    return {
        name: tuple(int(round(v / 255) * 255) for v in pixels.reshape(-1, 3).mean(0))
        for name, pixels in regions.items()
    }


# --- decoding -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_formats_decode_to_uint8_32x32x3(fmt):
    decoded = decode_image(save(two_halves(), fmt))
    assert decoded.shape == (32, 32, 3) and decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    assert region_colours(decoded)["top"] == RED and region_colours(decoded)["bottom"] == BLUE


def test_32x32_png_is_exact():
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(save(Image.fromarray(tile))), tile)


@pytest.mark.parametrize(
    ("orientation", "top", "left"), [(1, RED, None), (3, BLUE, None), (6, None, BLUE), (8, None, RED)]
)
def test_exif_orientation_is_applied(orientation, top, left):
    exif = Image.Exif()
    exif[0x0112] = orientation
    colours = region_colours(decode_image(save(two_halves(), "JPEG", exif=exif.tobytes(), quality=95)))
    if top:
        assert colours["top"] == top
    if left:
        assert colours["left"] == left and colours["right"] == (RED if left == BLUE else BLUE)


def test_alpha_is_flattened_onto_white():
    array = np.zeros((32, 32, 4), dtype=np.uint8)
    array[..., 0] = 200  # red 200 everywhere, alpha varies by column band
    array[:, :10, 3] = 0
    array[:, 10:20, 3] = 255
    array[:, 20:, 3] = 128
    decoded = decode_image(save(Image.fromarray(array, mode="RGBA"))).astype(int)
    assert (decoded[:, :10] == 255).all()
    assert (decoded[:, 10:20] == [200, 0, 0]).all()
    expected = np.array([200 * 128 + 255 * 127, 255 * 127, 255 * 127]) / 255
    assert np.abs(decoded[:, 20:] - expected).max() <= 1


def test_la_is_flattened_onto_white():
    array = np.zeros((32, 32, 2), dtype=np.uint8)
    array[..., 0] = 10
    array[:16, :, 1] = 255
    decoded = decode_image(save(Image.fromarray(array, mode="LA")))
    assert (decoded[:16] == 10).all() and (decoded[16:] == 255).all()


def test_palette_with_transparency():
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    image.paste(1, (0, 0, 32, 16))  # top half: index 1 (red); bottom: index 0 (green), made transparent
    for fmt in ("PNG", "GIF"):
        decoded = decode_image(save(image, fmt, transparency=0))
        assert (decoded[:16] == RED).all() and (decoded[16:] == 255).all(), fmt


def test_palette_without_transparency():
    image = two_halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    colours = region_colours(decode_image(save(image)))
    assert colours["top"] == RED and colours["bottom"] == BLUE


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_is_flattened(mode):
    """tRNS in a grayscale or RGB PNG names one colour as transparent."""
    image = Image.new(mode, (32, 32), 0 if mode == "L" else (0, 0, 0))
    image.paste(90 if mode == "L" else (90, 90, 90), (0, 0, 32, 16))
    decoded = decode_image(save(image, transparency=0 if mode == "L" else (0, 0, 0)))
    assert (decoded[:16] == 90).all() and (decoded[16:] == 255).all()


def test_grayscale_and_one_bit():
    decoded = decode_image(save(Image.new("L", (40, 40), 77)))
    assert (decoded == 77).all()
    decoded = decode_image(save(Image.new("1", (32, 32), 1)))
    assert (decoded == 255).all()


def test_cmyk_jpeg():
    decoded = decode_image(save(Image.new("CMYK", (48, 48), (0, 255, 255, 0)), "JPEG", quality=95))
    red, green, blue = decoded.reshape(-1, 3).mean(0)
    assert red > 230 and green < 25 and blue < 25


@pytest.mark.parametrize(("value16", "value8"), [(0, 0), (0x8000, 128), (0xFFFF, 255)])
def test_sixteen_bit_grayscale(value16, value8):
    image = Image.fromarray(np.full((32, 32), value16, dtype=np.uint16))
    decoded = decode_image(save(image))
    assert np.abs(decoded.astype(int) - value8).max() <= 1


def test_sixteen_bit_rgb():
    pixel = struct.pack(">HHH", 0xFFFF, 0x8000, 0x0000)
    rows = b"".join(b"\x00" + pixel * 32 for _ in range(32))  # filter byte 0, then 32 pixels per row
    decoded = decode_image(png_by_hand(32, 32, 16, 2, rows))
    assert (decoded == [255, 128, 0]).all()


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, (0, 255, 0), BLUE)]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert (decode_image(data) == RED).all()


@pytest.mark.parametrize("size", [(7, 7), (100, 50), (33, 32), (640, 480)])
def test_any_size_becomes_32x32(size):
    decoded = decode_image(save(Image.new("RGB", size, (10, 20, 30)), "JPEG", quality=95))
    assert decoded.shape == (32, 32, 3)
    assert np.abs(decoded.astype(int) - [10, 20, 30]).max() <= 3


def test_downscaling_antialiases():
    """A 1-pixel checkerboard must average to grey, not alias to black or white."""
    checker = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    decoded = decode_image(save(Image.fromarray(checker)))
    assert np.abs(decoded.astype(int) - 127.5).max() <= 2


@pytest.mark.parametrize("resize_filter", ["box", "bilinear", "lanczos"])
def test_resize_filters(resize_filter):
    decoded = decode_image(save(two_halves(100, 100)), DecodeOptions(resize_filter=resize_filter))
    assert region_colours(decoded)["top"] == RED
    assert RESIZE_FILTER == "box"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="resize_filter"):
        DecodeOptions(resize_filter="nearest-ish")
    with pytest.raises(ValueError, match="max_pixels"):
        DecodeOptions(max_pixels=0)


def test_decoding_is_deterministic_and_thread_safe():
    images = [save(two_halves(64 + index, 48), "JPEG") for index in range(8)]
    expected = [decode_image(data) for data in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(decode_image, images * 4))
    for index, result in enumerate(results):
        np.testing.assert_array_equal(result, expected[index % len(images)])


# --- bad bytes ----------------------------------------------------------------------------------------------------


def test_pixel_limit_from_the_options():
    with pytest.raises(ImageDecodeError, match="over the limit of 1,000") as caught:
        decode_image(save(Image.new("RGB", (32, 32))), DecodeOptions(max_pixels=1000))
    assert caught.value.kind == "too_large"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [8_000, 10_000, 60_000])
def test_decompression_bomb_is_refused_before_decoding(side):
    """A few hundred bytes that claim a huge canvas: refused from the header, no pixel decoded."""
    data = png_by_hand(side, side, 8, 0, b"\x00" * 64)
    assert len(data) < 200
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data)
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "not_image"),
        (b"hello, I am a text file\n", "not_image"),
        (b"%PDF-1.4\n" + bytes(200), "not_image"),
        (b"\x89PNG\r\n\x1a\n", "not_image"),
    ],
    ids=["empty", "text", "pdf", "png-signature-only"],
)
def test_non_images(data, kind):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data)
    assert caught.value.kind == kind
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_truncated_images_are_corrupt(fmt):
    rng = np.random.default_rng(1)
    data = save(Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data[: len(data) * 2 // 3])
    assert caught.value.kind in ("corrupt", "not_image")
    if fmt in ("PNG", "JPEG"):
        assert caught.value.kind == "corrupt"


def test_damaged_png_data_is_corrupt():
    data = bytearray(save(Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8))))
    data[200:260] = bytes(60)  # inside IDAT: CRC and deflate both break
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bytes(data))
    assert caught.value.kind == "corrupt"


def test_header_without_pixels_is_corrupt():
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(png_by_hand(32, 32, 8, 2, b""))
    assert caught.value.kind == "corrupt"


# --- normalization -------------------------------------------------------------------------------------------------


def test_normalize_shape_dtype_and_channel_order():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[1, 3, 5] = (255, 128, 0)
    out = normalize(images)
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32 and out.flags.c_contiguous
    for channel, value in enumerate((255, 128, 0)):
        expected = (value - MEAN_RGB[channel]) / STD_RGB[channel]
        assert out[1, channel, 3, 5] == pytest.approx(expected, rel=1e-5)
        assert out[0, channel, 0, 0] == pytest.approx(-MEAN_RGB[channel] / STD_RGB[channel], rel=1e-5)


def test_normalize_single_image_and_custom_statistics():
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    out = normalize(image, mean=(100, 100, 100), std=(2, 2, 2))
    assert out.shape == (1, 3, 32, 32)
    assert (out == 0).all()


def test_normalize_training_statistics_centre_the_data():
    mean_image = np.broadcast_to(np.array(MEAN_RGB), (32, 32, 3))
    rounded = np.round(mean_image).astype(np.uint8)
    assert np.abs(normalize(rounded)).max() < 0.01


def test_preprocess_is_decode_then_normalize():
    data = save(two_halves(50, 40), "JPEG")
    out = preprocess(data)
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(out, normalize(decode_image(data)))


def test_preprocess_needs_no_torch():
    code = "import sys, cifar10_classifier.preprocess; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

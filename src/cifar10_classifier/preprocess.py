"""Image bytes -> the exact array the network saw in training. The only place that does this.

Pure numpy + Pillow (no torch): training, evaluation, the CLI and the server all call these functions, so a
photo sent to the API goes through the same decode, resize and normalization as the training tiles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar10_classifier.errors import UserError

IMAGE_SIZE = 32
# Per-channel statistics of the CIFAR-10 training split, in 0..255 units. They travel in every model card so a
# served model normalizes exactly as it was trained.
MEAN_RGB: tuple[float, float, float] = (125.3, 122.9, 113.9)
STD_RGB: tuple[float, float, float] = (62.5, 61.9, 66.5)
# Antialiasing filter for downscaling photos to 32x32; recorded in the model card.
RESIZE_FILTER = "box"
_RESIZE_FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}
# Decompression-bomb guard: 40 megapixels covers any real photo and refuses 'tiny file, huge canvas' attacks.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(UserError, ValueError):
    """The bytes are not a usable image. `kind` says why: 'not_image', 'corrupt' or 'too_large'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodeOptions:
    max_pixels: int = DEFAULT_MAX_PIXELS
    resize_filter: str = RESIZE_FILTER

    def __post_init__(self) -> None:
        if self.resize_filter not in _RESIZE_FILTERS:
            raise ValueError(f"resize_filter must be one of {', '.join(_RESIZE_FILTERS)}, got {self.resize_filter!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (palette, grayscale, CMYK, 16-bit, alpha) -> 8-bit RGB; transparency is flattened onto white."""
    if image.mode == "P" or (image.mode in ("1", "L", "RGB") and "transparency" in image.info):
        # Palette images, and grayscale/RGB PNGs with a tRNS colour key, carry transparency in their info;
        # RGBA keeps it for the flatten below.
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        # 16/32-bit grayscale: scale to 8 bits by the dynamic range of the format, not by clipping.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if array.max() <= 1.0 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("LA", "La", "RGBa", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def decode_image(data: bytes, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Decode image bytes to a uint8 array (32, 32, 3): EXIF orientation, RGB, antialiased resize.

    Raises ImageDecodeError for non-images, corrupt or truncated files and images over the pixel limit.
    Multi-frame images (GIF, APNG, TIFF) use their first frame.
    """
    if not data:
        raise ImageDecodeError("not_image", "the file is empty")
    # Pillow's own bomb check (a DecompressionBombWarning past Image.MAX_IMAGE_PIXELS, an error past twice that)
    # stays as it is: silencing it would need warnings.catch_warnings, which is not thread-safe, and the server
    # decodes in threads. Ours, below, is stricter and runs before any pixel is decoded.
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > options.max_pixels:
            raise ImageDecodeError(
                "too_large",
                f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{options.max_pixels:,}; send a smaller image",
            )
        if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
            # JPEG draft mode lets libjpeg scale by 1/2..1/8 while decoding: a 640x480 photo decodes
            # at 80x60 in a fraction of the time. We still ask for >= 2x the target so the final
            # antialiased resize, not libjpeg, does the last reduction.
            image.draft(image.mode, (IMAGE_SIZE * 2, IMAGE_SIZE * 2))
        image.seek(0)
        upright: Image.Image = ImageOps.exif_transpose(image)
        upright = _to_rgb(upright)
        if upright.size != (IMAGE_SIZE, IMAGE_SIZE):
            upright = upright.resize((IMAGE_SIZE, IMAGE_SIZE), _RESIZE_FILTERS[options.resize_filter])
        array = np.asarray(upright, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError("not_image", "the file is not an image in a format we can read") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError("too_large", f"the image is too large to decode safely: {error}") from error
    except Exception as error:
        # Bytes from a user can make a decoder plugin fail in many ways (OSError for truncation, SyntaxError,
        # struct.error, zlib.error, ...): every one of them means the same thing to the caller.
        raise ImageDecodeError("corrupt", f"the image is corrupt or truncated: {error}") from error
    return np.ascontiguousarray(array.reshape(IMAGE_SIZE, IMAGE_SIZE, 3))


def normalize(
    images_uint8: np.ndarray, mean: tuple[float, ...] = MEAN_RGB, std: tuple[float, ...] = STD_RGB
) -> np.ndarray:
    """uint8 (N, 32, 32, 3) or (32, 32, 3) -> float32 (N, 3, 32, 32) normalized: the network's input."""
    if images_uint8.ndim == 3:
        images_uint8 = images_uint8[None]
    mean_array = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std_array = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    images = images_uint8.transpose(0, 3, 1, 2).astype(np.float32)  # (N, 3, H, W)
    return np.ascontiguousarray((images - mean_array) * inv_std_array)


def preprocess(data: bytes, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Image bytes -> float32 (1, 3, 32, 32), the network's input."""
    return normalize(decode_image(data, options))

"""Image decoding and preprocessing: bytes -> PIL image -> normalised batch tensor.

The serving chain and the demo model's training use these same functions, so what a
model sees in production is exactly what it was trained on.

Speed: JPEGs are decoded at reduced size (``Image.draft``) when the target is much
smaller than the image, and resizing happens on uint8 pixels; float conversion and
normalisation run once per batch.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from scorer.errors import BadRequestError, PayloadTooLargeError
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.models.spec import InputSpec

# A decoded image larger than this is refused before its pixels are allocated.
MAX_IMAGE_PIXELS = 50_000_000
MAX_ASPECT_RATIO = 50.0


# JPEG colour modes the device decoder turns into RGB as PIL does (CMYK and others: PIL).
DEVICE_JPEG_MODES = frozenset({"RGB", "L"})


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG whose header passed :func:`decode_image`'s checks, kept encoded so that it is
    decoded on the model's device (:mod:`scorer.inference.device_images`).

    ``size`` is what :func:`decode_image` would have decoded it to (reduced by ``draft``
    for its target), so a request's pixel budget is counted alike on both paths;
    ``full_size`` is the size the device decodes.
    """

    data: bytes
    size: tuple[int, int]
    full_size: tuple[int, int]


def decode_image(data: bytes, target: int | None = None) -> Image.Image:
    """Decode image bytes (JPEG, PNG, WebP, ...) into an RGB PIL image.

    Args:
        data: the encoded image.
        target: the smallest side the caller will resize to; JPEGs are decoded at the
            smallest DCT scale that still covers it.

    Raises:
        BadRequestError: empty, corrupt, truncated or absurdly shaped image.
        PayloadTooLargeError: the image declares more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    image = _open(data, target, keep_jpeg=False)
    assert isinstance(image, Image.Image)
    return image


def read_image(data: bytes, target: int | None = None) -> Image.Image | EncodedJpeg:
    """:func:`decode_image`, except that an RGB or greyscale JPEG that ends with its
    end-of-image marker is checked (header, size, shape) but left encoded, as an
    :class:`EncodedJpeg`, for decoding on the device.

    Raises:
        BadRequestError, PayloadTooLargeError: as :func:`decode_image`.
    """
    return _open(data, target, keep_jpeg=True)


def _ends_with_eoi(data: bytes) -> bool:
    """Whether a JPEG ends with its end-of-image marker (padding aside): one that does not
    is truncated, and PIL decodes it here (a 400), whatever a device decoder would make
    of it."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _open(data: bytes, target: int | None, *, keep_jpeg: bool) -> Image.Image | EncodedJpeg:
    """Check the header and decode (or, with ``keep_jpeg``, keep a JPEG encoded)."""
    if not data:
        raise BadRequestError("empty request body: expected image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise PayloadTooLargeError(
                    f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels"
                )
            if (
                width < 1
                or height < 1
                or max(width, height) / min(width, height) > MAX_ASPECT_RATIO
            ):
                raise BadRequestError(
                    f"image is {width}x{height}: aspect ratio above {MAX_ASPECT_RATIO:g} is refused"
                )
            if target is not None and img.format == "JPEG":
                img.draft("RGB", (target, target))
            if (
                keep_jpeg
                and img.format == "JPEG"
                and img.mode in DEVICE_JPEG_MODES
                and _ends_with_eoi(data)
            ):
                return EncodedJpeg(data, img.size, (width, height))
            img.load()
    except (PayloadTooLargeError, BadRequestError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError(f"image too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise BadRequestError("request body is not a decodable image (JPEG, PNG, WebP)") from None
    except MemoryError:
        raise
    except Exception as exc:  # PIL plugins raise many types on hostile input: all are 400
        raise BadRequestError(f"corrupt or truncated image: {str(exc)[:200]}") from None
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_image(img: Image.Image, spec: InputSpec) -> Image.Image:
    """Resize (and crop or pad) one RGB image to ``spec.size`` square, per ``spec.policy``."""
    size = spec.size
    width, height = img.size
    if spec.policy == "resize":
        return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if spec.policy == "letterbox":
        scale = size / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
        fill = tuple(round(m * 255) for m in spec.mean)
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
        return canvas
    # resize_center_crop: shorter side to spec.resize, then the central size x size
    scale = spec.resize / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (new[0] - size) // 2
    top = (new[1] - size) // 2
    return resized.crop((left, top, left + size, top + size))


def decode_target(spec: InputSpec) -> int:
    """The smallest side a JPEG must be decoded at to serve ``spec`` without upsampling."""
    return spec.resize if spec.policy == "resize_center_crop" else spec.size


def to_batch(images: Sequence[Image.Image], spec: InputSpec) -> torch.Tensor:
    """Stack already-resized RGB images into one normalised NCHW float tensor."""
    arrays = np.stack([np.asarray(img, dtype=np.uint8) for img in images])
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def preprocess_images(
    images: Sequence[Image.Image], spec: InputSpec, pool: ImagePool = SERIAL
) -> torch.Tensor:
    """Resize every image per ``spec`` (on ``pool``'s threads) and return the batch tensor."""
    resized = pool.map_in_order(lambda img: resize_image(img, spec), images)
    return to_batch(list(resized), spec)

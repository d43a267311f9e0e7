"""JPEGs decoded, resized and normalised on the model's device (nvJPEG on CUDA).

When a worker's model runs on CUDA, the JPEGs of a forward pass are decoded by
torchvision's ``decode_jpeg`` in one call (a batched list, nvJPEG), then resized and
normalised on the device; other formats, and every image on a CPU-only host, take the CPU
path of :mod:`scorer.inference.images` (PIL with ``draft``, which measured faster than
torchvision's CPU decoder). :func:`choose_decoding` makes the choice once per worker.

The request's decoder only checks a JPEG's header (:func:`images.read_image`), so limits
and 4xx answers are the CPU path's (a JPEG without its end-of-image marker is truncated:
PIL decodes it there, a 400); a JPEG the device decoder refuses is decoded by PIL here, and
a corrupt one raises the same :class:`~scorer.errors.BadRequestError`.

Resizing follows :func:`images.resize_image`'s policies with torch's antialiased bilinear
interpolation on the full-size image (PIL decodes a reduced-size image first): inputs
differ from the CPU path's by a few hundredths in normalised units, and scores by less
(``tests/unit/test_device_images.py`` compares both paths). On the CPU, ``decode_jpeg``
runs libjpeg-turbo, which is how the tests exercise this path without a GPU.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.inference.images import EncodedJpeg, decode_image, preprocess_images
from scorer.models.spec import InputSpec

logger = logging.getLogger(__name__)

Decoding = Literal["device", "pil"]
"""How a worker decodes JPEGs: ``"device"`` (``decode_jpeg`` on the model's device, then
resize and normalise there) or ``"pil"`` (the CPU path)."""

# A 16x16 grey baseline JPEG: the probe that nvJPEG works in this process.
_PROBE_SIDE = 16


def choose_decoding(device: torch.device) -> Decoding:
    """``"device"`` when ``device`` is CUDA and a JPEG decodes there, else ``"pil"``."""
    if device.type != "cuda":
        return "pil"
    try:
        decode_jpegs([_probe_jpeg()], device)
    except Exception as exc:  # no nvJPEG in this build, a driver problem: the CPU path
        logger.warning("JPEG decoding on %s failed (%s); decoding with PIL", device, exc)
        return "pil"
    return "device"


def _probe_jpeg() -> EncodedJpeg:
    buffer = io.BytesIO()
    Image.new("RGB", (_PROBE_SIDE, _PROBE_SIDE), (128, 128, 128)).save(buffer, format="JPEG")
    side = (_PROBE_SIDE, _PROBE_SIDE)
    return EncodedJpeg(buffer.getvalue(), side, side)


def _decode_jpeg(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return list(decoded)


def _pil_decoded(jpeg: EncodedJpeg, device: torch.device) -> torch.Tensor:
    """A JPEG the device decoder refused, decoded by PIL at full size (corrupt: 400)."""
    pixels = np.asarray(decode_image(jpeg.data), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)


def decode_jpegs(jpegs: Sequence[EncodedJpeg], device: torch.device) -> list[torch.Tensor]:
    """RGB ``uint8`` ``(3, H, W)`` tensors on ``device``, decoded in one call; if that call
    fails, each JPEG alone, and one the device decoder refuses by PIL.

    Raises:
        BadRequestError: a JPEG PIL cannot decode either (corrupt or truncated).
    """
    if not jpegs:
        return []
    data = [torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8) for jpeg in jpegs]
    try:
        return _decode_jpeg(data, device)
    except RuntimeError:
        if len(jpegs) > 1:
            logger.info("decoding %d JPEGs together failed; decoding each alone", len(jpegs))
    decoded = []
    for one, jpeg in zip(data, jpegs, strict=True):
        try:
            decoded.extend(_decode_jpeg([one], device))
        except RuntimeError:
            decoded.append(_pil_decoded(jpeg, device))
    return decoded


def _resized(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A ``(N, 3, H, W)`` batch resized with antialiased bilinear interpolation (float)."""
    if tuple(images.shape[2:]) == (height, width):
        return images.float()
    return functional.interpolate(
        images.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )


def resize_on_device(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Same-sized ``(N, 3, H, W)`` images as ``spec.size`` squares per ``spec.policy``, as
    float pixel values (0-255) on their device."""
    size = spec.size
    height, width = int(images.shape[2]), int(images.shape[3])
    if spec.policy == "resize":
        return _resized(images, size, size)
    if spec.policy == "letterbox":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        fill = torch.tensor([round(m * 255) for m in spec.mean], device=images.device)
        canvas = fill.float().view(1, 3, 1, 1).repeat(images.shape[0], 1, size, size)
        left, top = (size - new_w) // 2, (size - new_h) // 2
        canvas[:, :, top : top + new_h, left : left + new_w] = _resized(images, new_h, new_w)
        return canvas
    # resize_center_crop: shorter side to spec.resize, then the central size x size
    scale = spec.resize / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = _resized(images, new_h, new_w)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return resized[:, :, top : top + size, left : left + size]


def normalise_on_device(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Float pixel values (0-255) as the network's input: ``(x / 255 - mean) / std``."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return pixels.div(255.0).sub_(mean).div_(std)


def preprocess_on_device(
    images: Sequence[Image.Image | EncodedJpeg],
    spec: InputSpec,
    device: torch.device,
    pool: ImagePool = SERIAL,
) -> torch.Tensor:
    """The normalised ``(N, 3, size, size)`` batch on ``device``, in order: the JPEGs
    decoded there in one call and resized there (images of one size together), the other
    images by the CPU path (on ``pool``) and copied over.

    Raises:
        BadRequestError: a JPEG that is corrupt or truncated.
    """
    size = spec.size
    batch = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    jpeg_at = [i for i, image in enumerate(images) if isinstance(image, EncodedJpeg)]
    jpegs = [image for image in images if isinstance(image, EncodedJpeg)]
    decoded = decode_jpegs(jpegs, device)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, pixels in enumerate(decoded):
        by_shape.setdefault(tuple(pixels.shape), []).append(position)
    for positions in by_shape.values():
        same = torch.stack([decoded[p] for p in positions])
        target = torch.tensor([jpeg_at[p] for p in positions], device=device)
        batch.index_copy_(0, target, normalise_on_device(resize_on_device(same, spec), spec))
    others = [i for i, image in enumerate(images) if not isinstance(image, EncodedJpeg)]
    if others:
        pil = [image for image in images if isinstance(image, Image.Image)]
        host = preprocess_images(pil, spec, pool)
        target = torch.tensor(others, device=device)
        batch.index_copy_(0, target, to_device(host, device))
    return batch.contiguous(memory_format=torch.channels_last)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``: on CUDA copied from pinned (page-locked) memory without
    waiting (the forward pass that follows is queued behind the copy); on the CPU as it is.
    """
    if device.type == "cuda" and batch.device.type == "cpu":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)

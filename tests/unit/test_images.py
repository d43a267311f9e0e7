"""scorer.inference.images: decoding, decompression-bomb and shape limits, resizing, batching."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from scorer.errors import BadRequestError, PayloadTooLargeError, ScorerError
from scorer.inference import images
from scorer.inference.images import (
    decode_image,
    decode_target,
    preprocess_images,
    resize_image,
    to_batch,
)
from scorer.models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from tests.support.models import image_bytes


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header (IHDR + IEND, no pixel data) that declares width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is patched to declare width x height."""
    data = bytearray(image_bytes("JPEG", (32, 24)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_formats_decode_to_rgb(fmt: str) -> None:
    img = decode_image(image_bytes(fmt, (64, 48)))
    assert img.mode == "RGB"
    assert img.size == (64, 48)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "JPEG"), ("CMYK", "JPEG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"),
     ("P", "PNG"), ("1", "PNG"), ("P", "GIF"), ("RGBA", "WEBP"), ("I;16", "PNG")],
)  # fmt: skip
def test_every_pixel_mode_becomes_rgb(mode: str, fmt: str) -> None:
    grey = Image.linear_gradient("L").resize((40, 30))
    if mode == "I;16":
        source = Image.fromarray(np.asarray(grey).astype(np.uint16) * 256)
    else:
        source = grey.convert(mode)
    if mode in {"RGBA", "LA"}:
        source.putalpha(grey)  # real transparency, so the encoder keeps the alpha channel
    data = encode(source, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    img = decode_image(data)
    assert img.mode == "RGB"
    assert img.size == (40, 30)


def test_rgba_keeps_colour_and_palette_keeps_colour() -> None:
    red = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    assert decode_image(encode(red, "PNG")).getpixel((4, 4)) == (255, 0, 0)
    blue = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P")
    assert decode_image(encode(blue, "PNG")).getpixel((4, 4)) == (0, 0, 255)


def test_empty_bytes_are_400() -> None:
    with pytest.raises(BadRequestError, match="empty request body"):
        decode_image(b"")


def test_random_bytes_are_400() -> None:
    with pytest.raises(BadRequestError, match="not a decodable image"):
        decode_image(bytes(range(256)) * 4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_400(fmt: str) -> None:
    data = image_bytes(fmt, (320, 240))
    with pytest.raises(BadRequestError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status_code == 400
    assert "truncated" in info.value.message or "corrupt" in info.value.message


def test_truncated_jpeg_is_400_with_draft_decoding_too() -> None:
    data = image_bytes("JPEG", (640, 480))
    with pytest.raises(BadRequestError, match="corrupt or truncated image"):
        decode_image(data[: len(data) // 3], target=72)


def test_png_declaring_30000x30000_is_413_before_any_pixel_is_allocated() -> None:
    data = png_declaring(30000, 30000)
    assert len(data) < 100
    with pytest.raises(PayloadTooLargeError) as info:
        decode_image(data)
    # a decoder that tried to allocate 2.7 GB and read pixels would answer 400 (no IDAT) or OOM
    assert info.value.status_code == 413
    assert "900000000" in info.value.message


def test_jpeg_declaring_30000x30000_is_413() -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        decode_image(jpeg_declaring(30000, 30000), target=224)
    assert info.value.status_code == 413


def test_image_just_over_scorers_pixel_limit_is_413() -> None:
    # 56 M pixels: under PIL's own bomb threshold (89 M), over scorer's 50 M
    with pytest.raises(PayloadTooLargeError) as info:
        decode_image(png_declaring(8000, 7000))
    assert info.value.message == "image is 8000x7000 pixels; the limit is 50000000 pixels"


def test_image_in_pils_warning_band_is_413() -> None:
    # 90 M pixels: PIL only *warns* here; scorer turns the warning into a 413
    with pytest.raises(PayloadTooLargeError, match="too large to decode safely"):
        decode_image(png_declaring(10000, 9000))


def test_pixel_limit_is_fifty_million() -> None:
    assert images.MAX_IMAGE_PIXELS == 50_000_000
    assert images.MAX_ASPECT_RATIO == 50.0


@pytest.mark.parametrize("size", [(1, 1000), (1000, 1), (2, 101)])
def test_absurd_aspect_ratio_is_400(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, (10, 20, 30)), "PNG")
    with pytest.raises(BadRequestError) as info:
        decode_image(data)
    assert info.value.status_code == 400
    assert f"{size[0]}x{size[1]}" in info.value.message
    assert "aspect ratio" in info.value.message


def test_aspect_ratio_of_exactly_fifty_is_accepted() -> None:
    img = decode_image(encode(Image.new("RGB", (50, 1)), "PNG"))
    assert img.size == (50, 1)


def _tiff_with_undefined_strip_offsets() -> bytes:
    data = bytearray(encode(Image.new("RGB", (40, 30), (1, 2, 3)), "TIFF"))
    entry = b"\x11\x01\x04\x00\x01\x00\x00\x00"  # tag 273 StripOffsets, type LONG, count 1
    assert data.count(entry) == 1
    at = data.index(entry)
    data[at + 2 : at + 4] = b"\x07\x00"  # type UNDEFINED: PIL hands bytes to seek()
    return bytes(data)


def test_corrupt_tiff_tag_is_400() -> None:
    with pytest.raises(ScorerError) as info:
        decode_image(_tiff_with_undefined_strip_offsets())
    assert info.value.status_code == 400


# --- JPEG draft decoding ------------------------------------------------------------------------


def test_jpeg_draft_decodes_at_reduced_size_and_stays_close_to_full_decoding() -> None:
    spec = InputSpec(size=64, resize=72)
    data = image_bytes("JPEG", (1024, 768), seed=3)
    drafted = decode_image(data, target=decode_target(spec))
    full = decode_image(data)
    assert full.size == (1024, 768)
    assert drafted.size == (128, 96)  # 1/8 scale still covers 72 px on the short side
    assert min(drafted.size) >= spec.resize
    diff = (preprocess_images([drafted], spec) - preprocess_images([full], spec)).abs()
    assert float(diff.mean()) < 0.02
    assert float(diff.max()) < 0.5


def test_draft_never_goes_below_the_target() -> None:
    data = image_bytes("JPEG", (300, 200))
    assert decode_image(data, target=150).size == (300, 200)  # 1/2 would give 100 < 150
    assert decode_image(data, target=100).size == (150, 100)


def test_non_jpeg_is_not_drafted() -> None:
    assert decode_image(image_bytes("PNG", (1024, 768)), target=64).size == (1024, 768)


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        (InputSpec(size=224, resize=256), 256),
        (InputSpec(size=64, resize=80, policy="resize"), 64),
        (InputSpec(size=96, resize=96, policy="letterbox"), 96),
    ],
)
def test_decode_target(spec: InputSpec, target: int) -> None:
    assert decode_target(spec) == target


# --- resizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["resize_center_crop", "resize", "letterbox"])
@pytest.mark.parametrize("size", [(200, 100), (100, 200), (10, 10), (640, 480)])
def test_every_policy_gives_a_spec_size_square(policy: str, size: tuple[int, int]) -> None:
    spec = InputSpec(size=32, resize=40, policy=policy)
    out = resize_image(Image.new("RGB", size, (200, 10, 10)), spec)
    assert out.size == (32, 32)
    assert out.mode == "RGB"


def _white_centre_stripe() -> Image.Image:
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste(Image.new("RGB", (100, 100), (255, 255, 255)), (50, 0))
    return img


def test_center_crop_keeps_the_centre() -> None:
    out = resize_image(_white_centre_stripe(), InputSpec(size=32, resize=40))
    assert np.asarray(out).min() >= 250  # only the white centre survives the crop


def test_resize_stretches_the_whole_image() -> None:
    out = np.asarray(resize_image(_white_centre_stripe(), InputSpec(size=32, policy="resize")))
    assert out[:, 0].max() == 0 and out[:, -1].max() == 0  # black edges kept
    assert out[:, 16].min() == 255


def test_letterbox_pads_with_the_mean_colour() -> None:
    spec = InputSpec(size=32, resize=32, policy="letterbox")
    out = resize_image(Image.new("RGB", (200, 100), (255, 255, 255)), spec)
    fill = tuple(round(m * 255) for m in IMAGENET_MEAN)
    assert out.getpixel((16, 0)) == fill
    assert out.getpixel((16, 31)) == fill
    assert out.getpixel((16, 16)) == (255, 255, 255)
    assert out.getpixel((0, 16)) == (255, 255, 255)  # the long side fills the width


# --- batching -----------------------------------------------------------------------------------


def test_white_image_normalises_to_one_minus_mean_over_std() -> None:
    spec = InputSpec(size=8, resize=8, policy="resize")
    batch = to_batch([Image.new("RGB", (8, 8), (255, 255, 255))], spec)
    assert batch.shape == (1, 3, 8, 8)
    assert batch.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    for channel, value in enumerate(expected):
        assert torch.allclose(batch[0, channel], torch.full((8, 8), value), atol=1e-6)


def test_black_image_and_custom_mean_std() -> None:
    spec = InputSpec(size=4, resize=4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    batch = to_batch([Image.new("RGB", (4, 4), (0, 0, 0))], spec)
    assert batch[0, :, 0, 0].tolist() == [-1.0, -1.0, 0.0]


def test_channels_are_rgb_in_order_and_memory_is_channels_last() -> None:
    spec = InputSpec(size=4, resize=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    batch = to_batch([Image.new("RGB", (4, 4), (255, 0, 51))], spec)
    assert batch[0, :, 2, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert batch.is_contiguous(memory_format=torch.channels_last)


def test_preprocess_images_stacks_differently_sized_images_in_order() -> None:
    spec = InputSpec(size=16, resize=20)
    imgs = [Image.new("RGB", (40, 30), (255, 255, 255)), Image.new("RGB", (90, 300), (0, 0, 0))]
    batch = preprocess_images(imgs, spec)
    assert batch.shape == (2, 3, 16, 16)
    assert float(batch[0].mean()) > float(batch[1].mean())

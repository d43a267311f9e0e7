"""Procedurally generated ad-like creatives and the measurable visual properties they have.

A creative is drawn from one integer seed (same seed, same pixels): a background (flat
colour, linear or radial gradient, smoothed-noise "photo" texture, soft colour blobs), a few
shapes (rectangles, ellipses, polygons, lines, photo-like panels), blocks of text drawn with
Pillow's built-in font, and then global effects that move the measured properties across
their whole range (blur, sharpening, sensor noise, desaturation down to greyscale,
brightness and contrast changes).

The label functions measure an image's pixels as given. The demo model measures them on the
image exactly as the network sees it (after :func:`scorer.inference.images.resize_image`).
Every label is scaled to roughly ``[0, 1]`` by a fixed, documented mapping:

========================  ==============================================================
``sharpness``             ``log1p(var(Laplacian(Y))) / 10`` with ``Y`` the luma in 0..255
                          and the 4-neighbour Laplacian over the interior pixels
``colourfulness``         Hasler & Süsstrunk (2003) ``M / 150``, where ``M`` is computed on
                          0..255 RGB: ``sqrt(sd(rg)² + sd(yb)²) + 0.3 sqrt(mean(rg)² +
                          mean(yb)²)``, ``rg = R - G``, ``yb = (R + G) / 2 - B``
``contrast``              RMS contrast: ``2 * sd(Y)`` with ``Y`` the luma in 0..1
``brightness``            mean luma ``Y = 0.299 R + 0.587 G + 0.114 B`` in 0..1
``text_coverage``         fraction of the canvas inside the union of the text lines'
                          bounding boxes (known exactly from the generator)
========================  ==============================================================

This module imports no torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

Box = tuple[int, int, int, int]

LABELS = ("sharpness", "colourfulness", "contrast", "brightness", "text_coverage")
"""The label names, in the order :func:`measure` returns them."""

_WORDS = (
    "SALE",
    "NEW",
    "Buy now",
    "50% OFF",
    "Free shipping",
    "Limited",
    "Shop",
    "today only",
    "Summer",
    "Collection",
    "Save big",
    "Best price",
    "Order now",
    "Try it free",
    "Deal",
    "Exclusive",
    "Sign up",
    "Discover",
    "premium",
    "2 for 1",
    "Get yours",
    "Fresh",
    "Hot",
    "Only $9.99",
    "Learn more",
    "Download",
    "Book now",
    "Win",
    "Gift",
    "Organic",
)
_SIZES = ((160, 160), (192, 144), (144, 192), (200, 112), (128, 176), (176, 128), (192, 192))


@dataclass(frozen=True)
class Creative:
    """One generated creative: the RGB image and the bounding boxes of its text lines."""

    seed: int
    image: Image.Image
    text_boxes: tuple[Box, ...]

    @property
    def text_coverage(self) -> float:
        """Fraction of the canvas covered by the union of the text boxes."""
        return text_coverage(self.text_boxes, self.image.size)


def generate_creative(
    seed: int, *, size: tuple[int, int] | None = None, degrade: bool = True
) -> Creative:
    """Draw the creative for ``seed`` (deterministic: same arguments, same image bytes).

    Args:
        seed: any integer; it fixes every random choice.
        size: ``(width, height)``; by default one of a few ad-like shapes, picked by the seed.
        degrade: apply the random global effects (blur, greyscale, brightness/contrast,
            noise). ``False`` gives a clean creative with at least two shapes and one text
            block, i.e. something with edges and colour, e.g. to test rankings on.
    """
    rng = random.Random(f"scorer.creative:{seed}")
    nrng = np.random.default_rng(rng.getrandbits(64))
    width, height = size if size is not None else rng.choice(_SIZES)
    image = _background(rng, nrng, width, height)
    for _ in range(rng.choice((0, 1, 2, 2, 3, 4, 5, 6) if degrade else (2, 3, 4, 5))):
        _shape(rng, nrng, image)
    boxes: list[Box] = []
    for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 2, 3, 4) if degrade else (1, 1, 2, 3))):
        boxes.extend(_text_block(rng, image))
    if degrade:
        image = _degrade(rng, nrng, image)
    return Creative(seed=seed, image=image, text_boxes=tuple(boxes))


# -- labels ---------------------------------------------------------------------------------


def luma(img: Image.Image) -> np.ndarray:
    """Rec. 601 luma of an RGB image as float64 in 0..255."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def sharpness(img: Image.Image) -> float:
    """``log1p`` of the variance of the luma's Laplacian, divided by 10 (about 0..1)."""
    y = luma(img)
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return float(np.log1p(lap.var()) / 10.0)


def colourfulness(img: Image.Image) -> float:
    """Hasler & Süsstrunk colourfulness on 0..255 RGB, divided by 150 (0 for grey)."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = math.hypot(float(rg.std()), float(yb.std()))
    offset = math.hypot(float(rg.mean()), float(yb.mean()))
    return (spread + 0.3 * offset) / 150.0


def contrast(img: Image.Image) -> float:
    """RMS contrast: twice the standard deviation of the luma in 0..1 (0..1)."""
    return float(2.0 * luma(img).std() / 255.0)


def brightness(img: Image.Image) -> float:
    """Mean luma in 0..1."""
    return float(luma(img).mean() / 255.0)


def text_coverage(boxes: Sequence[Box], size: tuple[int, int]) -> float:
    """Fraction of a ``(width, height)`` canvas inside the union of ``boxes``."""
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    for left, top, right, bottom in boxes:
        mask[max(0, top) : max(0, bottom), max(0, left) : max(0, right)] = True
    return float(mask.mean())


def measure(img: Image.Image, text_boxes: Sequence[Box] = ()) -> dict[str, float]:
    """All five labels of ``img`` (text boxes in ``img``'s pixel coordinates), in LABELS order."""
    return {
        "sharpness": sharpness(img),
        "colourfulness": colourfulness(img),
        "contrast": contrast(img),
        "brightness": brightness(img),
        "text_coverage": text_coverage(text_boxes, img.size),
    }


# -- drawing --------------------------------------------------------------------------------


def _colour(rng: random.Random) -> tuple[int, int, int]:
    """A random colour: saturated brand-like colours, pastels, darks or greys."""
    kind = rng.random()
    if kind < 0.5:  # HSV with high saturation
        hue, sat, val = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)
    elif kind < 0.8:  # muted / pastel
        hue, sat, val = rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 1.0)
    else:  # neutral
        hue, sat, val = 0.0, 0.0, rng.uniform(0.0, 1.0)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))[i]
    return round(r * 255), round(g * 255), round(b * 255)


def _smooth_noise(nrng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Value noise in 0..1: a ``cells``-wide random grid upsampled bicubically."""
    grid = nrng.random((max(2, cells * height // width), max(2, cells)))
    small = Image.fromarray((grid * 255).astype(np.uint8), mode="L")
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255


def _texture(rng: random.Random, nrng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like texture: octaves of smoothed noise mapped onto two or three colours."""
    octaves = rng.randint(1, 4)
    field = np.zeros((height, width), np.float32)
    weight, total = 1.0, 0.0
    cells = rng.randint(2, 6)
    for _ in range(octaves):
        field += weight * _smooth_noise(nrng, width, height, cells)
        total += weight
        weight *= rng.uniform(0.35, 0.7)
        cells *= 2 + rng.randint(0, 2)
    field /= total
    lo, hi = field.min(), field.max()
    field = (field - lo) / (hi - lo + 1e-9)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    rgb = a + field[..., None] * (b - a)
    if rng.random() < 0.4:  # a third colour in the mid tones
        c = np.array(_colour(rng), np.float32)
        mid = np.clip(1 - 2 * np.abs(field - 0.5), 0, 1)[..., None]
        rgb = rgb * (1 - mid) + c * mid
    if rng.random() < 0.5:  # grain
        rgb += nrng.normal(0, rng.uniform(2, 18), rgb.shape[:2]).astype(np.float32)[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def _background(
    rng: random.Random, nrng: np.random.Generator, width: int, height: int
) -> Image.Image:
    kind = rng.choice(("flat", "linear", "radial", "texture", "texture", "blobs"))
    if kind == "flat":
        return Image.new("RGB", (width, height), _colour(rng))
    if kind == "texture":
        return _texture(rng, nrng, width, height)
    # Smooth backgrounds are computed on a quarter-size grid and upsampled.
    sw, sh = max(2, width // 4), max(2, height // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32) * 4
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / (t.max() - t.min() + 1e-9)
        rgb = a + t[..., None] * (b - a)
    elif kind == "radial":
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(xx - cx, yy - cy) / (rng.uniform(0.4, 1.2) * max(width, height))
        rgb = a + np.clip(t, 0, 1)[..., None] * (b - a)
    else:  # soft colour blobs on a base colour
        rgb = np.broadcast_to(a, (sh, sw, 3)).copy()
        for _ in range(rng.randint(2, 6)):
            colour = np.array(_colour(rng), np.float32)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius = rng.uniform(0.1, 0.5) * max(width, height)
            w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))[..., None]
            rgb = rgb * (1 - w) + colour * w
    small = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    return small.resize((width, height), Image.Resampling.BILINEAR)


def _shape(rng: random.Random, nrng: np.random.Generator, image: Image.Image) -> None:
    width, height = image.size
    w = int(rng.uniform(0.1, 0.7) * width)
    h = int(rng.uniform(0.1, 0.7) * height)
    left, top = rng.randint(-w // 4, width - w // 2), rng.randint(-h // 4, height - h // 2)
    box = (left, top, left + w, top + h)
    kind = rng.choice(("rect", "rect", "ellipse", "polygon", "line", "panel"))
    if kind == "panel":  # a photo-like picture inside the creative
        image.paste(_texture(rng, nrng, max(1, w), max(1, h)), (left, top))
        return
    draw = ImageDraw.Draw(image)
    fill = _colour(rng)
    outline = _colour(rng) if rng.random() < 0.3 else None
    stroke = rng.randint(1, 4)
    if kind == "rect":
        radius = rng.choice((0, 0, rng.randint(2, max(2, min(w, h) // 3))))
        draw.rounded_rectangle(box, radius=radius, fill=fill, outline=outline, width=stroke)
    elif kind == "ellipse":
        draw.ellipse(box, fill=fill, outline=outline, width=stroke)
    elif kind == "polygon":
        cx, cy, r = left + w / 2, top + h / 2, max(w, h) / 2
        n = rng.randint(3, 8)
        start = rng.uniform(0, 2 * math.pi)
        points = [
            (
                cx + r * rng.uniform(0.6, 1.0) * math.cos(start + 2 * math.pi * k / n),
                cy + r * rng.uniform(0.6, 1.0) * math.sin(start + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]
        draw.polygon(points, fill=fill, outline=outline, width=stroke)
    else:
        draw.line([box[:2], box[2:]], fill=fill, width=rng.randint(2, 10))


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_block(rng: random.Random, image: Image.Image) -> list[Box]:
    """Draw 1-3 lines of ad copy, maybe on a plate; return each line's bounding box."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    size = round(min(width, height) * rng.uniform(0.07, 0.22))
    font = _font(size)
    lines = [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        for _ in range(rng.randint(1, 3))
    ]
    if rng.random() < 0.3:
        lines = [line.upper() for line in lines]
    x, y = rng.randint(0, width // 2), rng.randint(0, max(0, height - size))
    origins = [(x, round(y + i * size * 1.2)) for i in range(len(lines))]
    spans = [draw.textbbox(o, t, font=font) for o, t in zip(origins, lines, strict=True)]
    pad = max(2, size // 4)
    area = (
        min(b[0] for b in spans) - pad,
        min(b[1] for b in spans) - pad,
        max(b[2] for b in spans) + pad,
        max(b[3] for b in spans) + pad,
    )
    if rng.random() < 0.35:  # a plate behind the text, as on buttons and banners
        draw.rectangle(area, fill=_colour(rng))
    visible = (max(0, area[0]), max(0, area[1]), min(width, area[2]), min(height, area[3]))
    inside = visible[0] < visible[2] and visible[1] < visible[3]
    fill = _legible_colour(rng, image.crop(visible) if inside else image)
    boxes: list[Box] = []
    for origin, text, (left, top, right, bottom) in zip(origins, lines, spans, strict=True):
        draw.text(origin, text, fill=fill, font=font)
        clipped: Box = (
            max(0, int(left)), max(0, int(top)), min(width, int(right)), min(height, int(bottom))
        )
        if clipped[0] < clipped[2] and clipped[1] < clipped[3]:
            boxes.append(clipped)
    return boxes


def _legible_colour(rng: random.Random, backdrop: Image.Image) -> tuple[int, int, int]:
    """A text colour whose luma differs clearly from the backdrop's, as a designer would pick."""
    behind = float(luma(backdrop).mean())
    for _ in range(8):
        colour = _colour(rng)
        if abs(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] - behind) > 80:
            return colour
    return (255, 255, 255) if behind < 128 else (0, 0, 0)


def _degrade(rng: random.Random, nrng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Global effects that spread sharpness, colourfulness, contrast and brightness."""
    if rng.random() < 0.45:
        image = image.filter(ImageFilter.GaussianBlur(rng.choice((0.7, 1.2, 2.0, 3.0, 4.0))))
    elif rng.random() < 0.15:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=rng.randint(80, 200)))
    if rng.random() < 0.2:
        rgb = np.asarray(image, np.float64)
        rgb = rgb + nrng.normal(0, rng.uniform(3, 20), rgb.shape[:2])[..., None]
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    roll = rng.random()
    if roll < 0.15:
        image = image.convert("L").convert("RGB")
    elif roll < 0.45:
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.0, 1.6))
    if rng.random() < 0.4:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.35, 1.5))
    if rng.random() < 0.4:
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.45, 1.6))
    return image

"""Request decoding and response encoding, as registries keyed by content type.

:data:`DECODERS` maps a request media type to a decoder ``(body, target, pool)`` and
:data:`ENCODERS` maps a response media type to an encoder ``(value) -> bytes``; a miss is a
415 (:class:`UnsupportedContentTypeError`) or a 406 (:class:`UnsupportedAcceptError`).
:func:`decode` and :func:`encode` are the only ways in: the chain encodes every response
through :func:`encode`, so there is one encoding policy.

Tensor formats (JSON arrays, CSV, NPY) are decoded and encoded the way the AWS
sagemaker-inference toolkit does, so existing clients keep working; but NPY is read with
``allow_pickle=False`` and every malformed payload is a 400, never a 500.
``tests/unit/test_toolkit_oracle.py`` checks both against the toolkit's own functions, and
``docs/contract.md`` lists where scorer differs and why.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from scorer.errors import (
    BadRequestError,
    PayloadTooLargeError,
    ScorerError,
    UnsupportedAcceptError,
    UnsupportedContentTypeError,
)
from scorer.inference import content_types as ct
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.inference.images import EncodedJpeg, decode_image

MAX_JSON_IMAGES = 64
MAX_BATCH_PIXELS = 100_000_000  # decoded pixels per request, all images together


@dataclass
class ImageBatch:
    """Decoded images from one request; ``single`` when the request held one bare image.

    An image is an RGB PIL image, or, when the worker decodes JPEGs on its device and the
    default ``predict_fn`` runs (:mod:`scorer.inference.device_images`), a checked JPEG
    still encoded (:class:`~scorer.inference.images.EncodedJpeg`).
    """

    images: list[Image.Image | EncodedJpeg]
    single: bool


ImageReader = Callable[[bytes, int | None], Image.Image | EncodedJpeg]
"""How a decoder turns one image's bytes into an image, given its target side:
:func:`~scorer.inference.images.decode_image` (the default) or
:func:`~scorer.inference.images.read_image` (JPEGs kept for decoding on the device)."""


@dataclass
class Scores:
    """Per-image head scores for one request: what the default ``predict_fn`` returns.

    Every encoder knows it: JSON gives ``{"scores": [{head: value}], "model", "version"}``,
    CSV a header row of head names then one row per image, NPY the ``(images, heads)``
    matrix.
    """

    values: np.ndarray  # (images, heads) float32
    head_names: list[str]
    model: str
    version: str

    def records(self) -> list[dict[str, float]]:
        """One ``{head: score}`` dict per image."""
        return [
            {name: float(v) for name, v in zip(self.head_names, row, strict=True)}
            for row in self.values
        ]


F = TypeVar("F", bound=Callable[..., Any])


class CodecRegistry(Mapping[str, F]):
    """Codec functions keyed by bare media type; a ``type/*`` key serves a whole family.

    Lookups take the exact type first, then its ``type/*`` family; a miss raises the
    registry's error (415 for decoders, 406 for encoders).
    """

    def __init__(self, miss: Callable[[str, list[str]], ScorerError]) -> None:
        self._functions: dict[str, F] = {}
        self._miss = miss

    def register(self, media_type: str, fn: F) -> F:
        """Serve ``media_type`` (parameters dropped; ``image/*`` for a family) with ``fn``."""
        self._functions[ct.media_type(media_type)] = fn
        return fn

    def find(self, media_type: str) -> F | None:
        """The function for ``media_type``, or None."""
        fn = self._functions.get(media_type)
        if fn is None and "/" in media_type:
            fn = self._functions.get(media_type.split("/", 1)[0] + "/*")
        return fn

    def lookup(self, media_type: str) -> F:
        """The function for ``media_type``.

        Raises:
            ScorerError: the registry's 415/406 error naming the supported types.
        """
        fn = self.find(media_type)
        if fn is None:
            raise self._miss(media_type, self.supported())
        return fn

    def supported(self) -> list[str]:
        """The exact media types registered, in registration order (families left out)."""
        return [key for key in self._functions if not key.endswith("/*")]

    def __getitem__(self, media_type: str) -> F:
        return self._functions[media_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)


def _decode_b64(
    item: Any, index: int, target: int | None, read: ImageReader = decode_image
) -> Image.Image | EncodedJpeg:
    if isinstance(item, dict):
        item = item.get("b64", item.get("image", item.get("data")))
    if not isinstance(item, str):
        raise BadRequestError(f"images[{index}] must be a base64 string or {{'b64': ...}}")
    if item.startswith("data:") and "," in item:  # data URL
        item = item.split(",", 1)[1]
    try:
        raw = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"images[{index}] is not valid base64") from None
    try:
        return read(raw, target)
    except BadRequestError as exc:
        raise BadRequestError(f"images[{index}]: {exc.message}") from None


def _finite_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise BadRequestError(
            f"{what} must be a rectangular array of numbers (ragged or non-numeric data)"
        ) from None
    if array.size == 0:
        raise BadRequestError(f"{what} is empty")
    if not np.isfinite(array).all():
        raise BadRequestError(f"{what} contains NaN or infinity")
    return array


def _reject_constant(name: str) -> float:
    raise BadRequestError(f"JSON contains {name}, which is not a number")


def _require_body(body: bytes) -> None:
    if not body:
        raise BadRequestError("empty request body")


def decode_json(
    body: bytes,
    target: int | None = None,
    pool: ImagePool = SERIAL,
    read: ImageReader = decode_image,
) -> ImageBatch | np.ndarray:
    """JSON: ``{"image": b64}``, ``{"images": [b64, ...]}``, ``{"instances": [...]}`` or array.

    The images of ``{"images": [...]}`` are decoded (by ``read``) on ``pool``'s threads, in
    order.
    """
    _require_body(body)
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except BadRequestError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise BadRequestError(f"JSON value not accepted: {str(exc)[:120]}") from None
    if isinstance(data, dict):
        if "image" in data:
            return ImageBatch([_decode_b64(data["image"], 0, target, read)], single=True)
        items = data.get("images", data.get("instances"))
        if items is None:
            raise BadRequestError(
                "JSON object must have 'image' (base64), 'images' (list of base64) "
                "or 'instances'; or send a JSON array of numbers"
            )
        if not isinstance(items, list) or not items:
            raise BadRequestError("'images' must be a non-empty list")
        if all(isinstance(i, (str, dict)) for i in items):
            if len(items) > MAX_JSON_IMAGES:
                raise BadRequestError(f"at most {MAX_JSON_IMAGES} images per request")
            images: list[Image.Image | EncodedJpeg] = []
            pixels = 0

            def decode_one(indexed: tuple[int, Any]) -> Image.Image | EncodedJpeg:
                return _decode_b64(indexed[1], indexed[0], target, read)

            for image in pool.map_in_order(decode_one, list(enumerate(items))):
                pixels += image.size[0] * image.size[1]
                if pixels > MAX_BATCH_PIXELS:
                    raise PayloadTooLargeError(
                        f"the request's images decode to more than {MAX_BATCH_PIXELS} pixels"
                    )
                images.append(image)
            return ImageBatch(images, single=False)
        return _finite_array(items, "'instances'")
    if isinstance(data, list):
        return _finite_array(data, "JSON array")
    raise BadRequestError("JSON body must be an object or an array")


def decode_csv(body: bytes, target: int | None = None, pool: ImagePool = SERIAL) -> np.ndarray:
    """CSV of numbers, one row per line (as the toolkit's decoder)."""
    _require_body(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("CSV body is not UTF-8 text") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise BadRequestError("CSV body is empty")
    try:
        values = [[float(cell) for cell in row.split(",")] for row in rows]
    except ValueError:
        raise BadRequestError("CSV must contain only numbers separated by commas") from None
    if len({len(r) for r in values}) != 1:
        raise BadRequestError("CSV rows have different numbers of columns")
    array = _finite_array(values, "CSV")
    return array[0] if array.shape[0] == 1 and len(rows) == 1 else array


def _npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return shape, dtype


def decode_npy(body: bytes, target: int | None = None, pool: ImagePool = SERIAL) -> np.ndarray:
    """An ``.npy`` array; object arrays (which need pickle) are refused.

    The header is checked before anything is allocated: the shape it declares must fit in
    the bytes actually sent.
    """
    _require_body(body)
    if body[:1] == b"\x80":
        raise BadRequestError("NPY payload refused: pickled data is never loaded")
    stream = io.BytesIO(body)
    try:
        shape, dtype = _npy_header(stream)
        if dtype.hasobject:
            raise BadRequestError("NPY payload refused: object arrays need pickle")
        declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if declared > len(body) - stream.tell():
            raise BadRequestError(
                f"NPY header declares shape {tuple(shape)} ({declared} bytes) but the body "
                f"holds {len(body) - stream.tell()} bytes of data"
            )
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except BadRequestError:
        raise
    except MemoryError:
        raise
    except Exception:  # numpy's parser raises many types on hostile headers: all are 400
        raise BadRequestError("body is not a valid .npy array") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise BadRequestError("NPY array must be numeric")
    return _finite_array(array, "NPY array")


def decode_raw_image(
    body: bytes,
    target: int | None = None,
    pool: ImagePool = SERIAL,
    read: ImageReader = decode_image,
) -> ImageBatch:
    """One bare image (JPEG, PNG, WebP, ...): PIL sniffs the format, the media type decides
    nothing about it."""
    return ImageBatch([read(body, target)], single=True)


Decoder = Callable[[bytes, int | None, ImagePool], ImageBatch | np.ndarray]
ReadingDecoder = Callable[[bytes, int | None, ImagePool, ImageReader], ImageBatch | np.ndarray]


def _unsupported_content_type(content_type: str, supported: list[str]) -> ScorerError:
    return UnsupportedContentTypeError(
        f"unsupported Content-Type {content_type or '(none)'!r}; "
        f"supported: {', '.join(sorted(supported))}"
    )


DECODERS: CodecRegistry[Decoder] = CodecRegistry(_unsupported_content_type)
"""Request decoders by media type: ``decoder(body, target, pool)``, ``target`` being the
smallest side the model resizes images to (JPEGs are drafted down to it) and ``pool`` the
threads images are decoded on. Every decoder takes all three, used or not; scorer's own
image decoders (:data:`_READING_DECODERS`) also take how one image is read
(:data:`ImageReader`)."""
for _image_type in sorted(ct.IMAGE_TYPES):
    DECODERS.register(_image_type, decode_raw_image)
DECODERS.register("image/*", decode_raw_image)  # any other image/... PIL can read
DECODERS.register(ct.JSON, decode_json)
DECODERS.register(ct.CSV, decode_csv)
DECODERS.register(ct.NPY, decode_npy)
_READING_DECODERS: dict[object, ReadingDecoder] = {
    decode_json: decode_json,
    decode_raw_image: decode_raw_image,
}


def decode(
    body: bytes,
    content_type: str,
    target: int | None,
    pool: ImagePool = SERIAL,
    read: ImageReader = decode_image,
) -> ImageBatch | np.ndarray:
    """Decode a request body by its bare media type, with the decoder :data:`DECODERS` holds
    (scorer's image decoders read images with ``read``: decoded, or JPEGs kept for the
    device; a decoder registered by others decodes as it does).

    Raises:
        UnsupportedContentTypeError: no decoder for the media type (415).
        BadRequestError: the body is empty or does not match its content type (400).
    """
    decoder = DECODERS.find(content_type)
    if decoder is None:
        _require_body(body)  # an empty body is a 400 whatever its type
        decoder = DECODERS.lookup(content_type)
    reading = _READING_DECODERS.get(decoder)
    if reading is not None:
        return reading(body, target, pool, read)
    return decoder(body, target, pool)


# --- encoding -------------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """Arrays and numpy scalars to Python; NaN/inf to null, so the body is valid JSON."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_json(value: Any) -> bytes:
    """JSON text of a value (arrays become nested lists; NaN and infinity become null)."""
    if isinstance(value, Scores):
        value = {"scores": value.records(), "model": value.model, "version": value.version}
    try:
        return json.dumps(_json_ready(value), allow_nan=False).encode()
    except TypeError as exc:
        raise TypeError(f"prediction is not JSON serialisable: {exc}") from None


def encode_csv(value: Any) -> bytes:
    """Rows of comma-separated values (a 1-D array is one row; scores get a header row)."""
    if isinstance(value, Scores):
        return (",".join(value.head_names) + "\n").encode() + encode_csv(value.values)
    array = np.asarray(value)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)
    elif array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    stream = io.StringIO()
    np.savetxt(stream, array, delimiter=",", fmt="%s")
    return stream.getvalue().encode()


def encode_npy(value: Any) -> bytes:
    """An ``.npy`` array (never pickled; scores give their ``(images, heads)`` matrix)."""
    if isinstance(value, Scores):
        value = value.values
    stream = io.BytesIO()
    np.save(stream, np.asarray(value), allow_pickle=False)
    return stream.getvalue()


Encoder = Callable[[Any], bytes]


def _unsupported_accept(accept: str, supported: list[str]) -> ScorerError:
    return UnsupportedAcceptError(
        f"unsupported Accept {accept!r}; supported: {', '.join(supported)}"
    )


ENCODERS: CodecRegistry[Encoder] = CodecRegistry(_unsupported_accept)
"""Response encoders by media type: ``encoder(value) -> bytes``."""
ENCODERS.register(ct.JSON, encode_json)
ENCODERS.register(ct.CSV, encode_csv)
ENCODERS.register(ct.NPY, encode_npy)


def _plain(value: Any) -> Any:
    """A torch tensor as a numpy array (torch is not imported for it)."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def encode(value: Any, accept: str) -> bytes:
    """The response body for ``value`` as ``accept``: the one place responses are encoded.

    Bytes and strings are already encoded and pass through whatever ``accept`` says; a torch
    tensor is encoded as its numpy array; anything else goes to the encoder registered for
    ``accept``.

    Raises:
        UnsupportedAcceptError: no encoder for that type (406).
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return ENCODERS.lookup(accept)(_plain(value))

"""scorer.inference.codecs: decoding every content type, encoding every Accept, error paths."""

from __future__ import annotations

import base64
import io
import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scorer.errors import (
    BadRequestError,
    ScorerError,
    UnsupportedAcceptError,
    UnsupportedContentTypeError,
)
from scorer.inference import codecs
from scorer.inference import content_types as ct
from scorer.inference.codecs import ImageBatch
from scorer.inference.image_pool import SERIAL
from tests.support.models import image_bytes

JPEG = image_bytes("JPEG", (48, 32), seed=1)
PNG = image_bytes("PNG", (40, 30), seed=2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file whose header dict text is exactly ``header`` (padded)."""
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def bad_request(body: bytes, content_type: str, target: int | None = None) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        codecs.decode(body, content_type, target)
    assert info.value.status_code == 400
    return info.value


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [ct.JPEG, "image/jpg", ct.X_IMAGE, ct.OCTET_STREAM, ct.PNG, ct.WEBP, "image/gif"],
)
def test_raw_image_bytes_decode_to_one_rgb_image(content_type: str) -> None:
    decoded = codecs.decode(JPEG, content_type, None)
    assert isinstance(decoded, ImageBatch)
    assert decoded.single is True
    assert [img.size for img in decoded.images] == [(48, 32)]
    assert decoded.images[0].mode == "RGB"


def test_raw_image_content_type_decides_nothing_about_the_format() -> None:
    decoded = codecs.decode(PNG, ct.JPEG, None)  # PIL sniffs the real format
    assert isinstance(decoded, ImageBatch)
    assert decoded.images[0].size == (40, 30)


def test_empty_image_body_is_400() -> None:
    assert "empty" in bad_request(b"", ct.JPEG).message


def test_corrupt_image_body_is_400() -> None:
    assert "not a decodable image" in bad_request(b"not an image at all", ct.PNG).message


# --- JSON ---------------------------------------------------------------------------------------


def test_json_single_image() -> None:
    decoded = codecs.decode(json.dumps({"image": b64(JPEG)}).encode(), ct.JSON, None)
    assert isinstance(decoded, ImageBatch)
    assert decoded.single is True
    assert decoded.images[0].size == (48, 32)


def test_json_image_as_data_url() -> None:
    body = json.dumps({"image": "data:image/png;base64," + b64(PNG)}).encode()
    decoded = codecs.decode(body, ct.JSON, None)
    assert isinstance(decoded, ImageBatch)
    assert decoded.images[0].size == (40, 30)


def test_json_images_mixing_strings_and_b64_objects() -> None:
    body = json.dumps(
        {"images": [b64(JPEG), {"b64": b64(PNG)}, {"image": b64(JPEG)}, {"data": b64(PNG)}]}
    ).encode()
    decoded = codecs.decode(body, ct.JSON, None)
    assert isinstance(decoded, ImageBatch)
    assert decoded.single is False
    assert [img.size for img in decoded.images] == [(48, 32), (40, 30), (48, 32), (40, 30)]
    assert all(img.mode == "RGB" for img in decoded.images)


def test_json_images_is_a_batch_even_with_one_image() -> None:
    decoded = codecs.decode(json.dumps({"images": [b64(PNG)]}).encode(), ct.JSON, None)
    assert isinstance(decoded, ImageBatch)
    assert decoded.single is False
    assert len(decoded.images) == 1


def test_json_too_many_images_is_400() -> None:
    body = json.dumps({"images": ["x"] * (codecs.MAX_JSON_IMAGES + 1)}).encode()
    assert f"at most {codecs.MAX_JSON_IMAGES}" in bad_request(body, ct.JSON).message


def test_json_invalid_base64_names_the_item() -> None:
    body = json.dumps({"images": [b64(PNG), "!!not base64!!"]}).encode()
    assert bad_request(body, ct.JSON).message == "images[1] is not valid base64"


def test_json_non_ascii_base64_is_400() -> None:
    body = json.dumps({"image": "ÿÿÿÿ"}).encode()
    assert "not valid base64" in bad_request(body, ct.JSON).message


def test_json_corrupt_image_names_the_item() -> None:
    body = json.dumps({"images": [b64(PNG), b64(PNG), b64(b"garbage")]}).encode()
    message = bad_request(body, ct.JSON).message
    assert message.startswith("images[2]: ")
    assert "not a decodable image" in message


@pytest.mark.parametrize("item", [{"other": "x"}, {"b64": 5}])
def test_json_image_object_without_base64_is_400(item: dict[str, object]) -> None:
    body = json.dumps({"images": [item]}).encode()
    assert "must be a base64 string" in bad_request(body, ct.JSON).message


def test_json_image_that_is_not_a_string_is_400() -> None:
    assert "must be a base64 string" in bad_request(b'{"image": 5}', ct.JSON).message


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        (b"[1, 2, 3, 4]", (4,)),
        (b"[[1, 2, 3, 4]]", (1, 4)),
        (b"[[1, 2], [3, 4], [5, 6]]", (3, 2)),
        (b'{"instances": [[1, 2, 3, 4]]}', (1, 4)),
        (b'{"instances": [1.5, -2e3]}', (2,)),
        (b"[[[1], [2]], [[3], [4]]]", (2, 2, 1)),
    ],
)
def test_json_numeric_arrays_become_float32(body: bytes, shape: tuple[int, ...]) -> None:
    decoded = codecs.decode(body, ct.JSON, None)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float32
    assert decoded.shape == shape


def test_json_array_values_are_kept() -> None:
    decoded = codecs.decode(b'{"instances": [[1, 2.5], [-3, 4e2]]}', ct.JSON, None)
    np.testing.assert_array_equal(decoded, np.array([[1, 2.5], [-3, 400]], dtype=np.float32))


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_nan_and_infinity_are_400(constant: bytes) -> None:
    message = bad_request(b"[[1, " + constant + b", 3]]", ct.JSON).message
    assert constant.lstrip(b"-").decode() in message


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("body", [b"[1e999]", b"[1e39]", b'{"instances": [[-1e400]]}'])
def test_json_numbers_that_overflow_float32_are_400(body: bytes) -> None:
    assert "NaN or infinity" in bad_request(body, ct.JSON).message


@pytest.mark.parametrize(
    "body", [b"[[1, 2], [3]]", b'{"instances": [[1, 2, 3], [4, 5]]}', b"[1, [2, 3]]"]
)
def test_json_ragged_arrays_are_400(body: bytes) -> None:
    assert "rectangular" in bad_request(body, ct.JSON).message


@pytest.mark.parametrize("body", [b'[1, "abc"]', b'[{"a": 1}]', b'{"instances": [[1, "x"]]}'])
def test_json_non_numeric_arrays_are_400(body: bytes) -> None:
    assert "numbers" in bad_request(body, ct.JSON).message


@pytest.mark.parametrize("body", [b"[]", b"[[]]", b'{"instances": [[]]}'])
def test_json_empty_arrays_are_400(body: bytes) -> None:
    assert "empty" in bad_request(body, ct.JSON).message


@pytest.mark.parametrize("body", [b'{"images": []}', b'{"images": "abc"}', b'{"instances": {}}'])
def test_json_images_must_be_a_non_empty_list(body: bytes) -> None:
    assert "non-empty list" in bad_request(body, ct.JSON).message


def test_json_object_without_known_keys_is_400_naming_them() -> None:
    message = bad_request(b'{"inputs": [1, 2]}', ct.JSON).message
    for key in ("'image'", "'images'", "'instances'"):
        assert key in message


@pytest.mark.parametrize("body", [b"5", b'"a string"', b"true", b"null"])
def test_json_scalar_is_400(body: bytes) -> None:
    assert bad_request(body, ct.JSON).message == "JSON body must be an object or an array"


@pytest.mark.parametrize("body", [b"{", b"[1, 2", b"{'single': 'quotes'}", b"\xff\xfe\xfa"])
def test_malformed_json_is_400(body: bytes) -> None:
    assert "malformed JSON" in bad_request(body, ct.JSON).message


def test_deeply_nested_json_is_400_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert "malformed JSON" in bad_request(body, ct.JSON).message


def test_json_integer_with_too_many_digits_is_400() -> None:
    bad_request(b"[" + b"1" * 5000 + b"]", ct.JSON)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_single_row_is_one_dimensional() -> None:
    decoded = codecs.decode(b"1,2,3,4\n", ct.CSV, None)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, np.array([1, 2, 3, 4], dtype=np.float32))


def test_csv_rows_become_a_matrix_and_blank_lines_are_skipped() -> None:
    decoded = codecs.decode(b"1,2\n\n3.5, -4\r\n  \n5e1,6\n", ct.CSV, None)
    np.testing.assert_array_equal(decoded, np.array([[1, 2], [3.5, -4], [50, 6]], np.float32))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"1,2,abc", "only numbers"),
        (b"1,,3", "only numbers"),
        (b"1;2;3", "only numbers"),
        (b"1,2\n3", "different numbers of columns"),
        (b"1,nan", "NaN or infinity"),
        (b"inf,1", "NaN or infinity"),
        (b"1,1e39", "NaN or infinity"),
        (b"\n  \n", "CSV body is empty"),
        (b"\xff\xfe1,2", "not UTF-8"),
    ],
)
def test_bad_csv_is_400(body: bytes, needle: str) -> None:
    assert needle in bad_request(body, ct.CSV).message


# --- NPY ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(5, dtype=np.int64),
        np.array([[1.5, -2.0]], dtype=">f8"),
        np.array([True, False]),
        np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
    ],
)
def test_npy_numeric_arrays_decode_to_float32(array: np.ndarray) -> None:
    decoded = codecs.decode(npy(array), ct.NPY, None)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, array.astype(np.float32))


def test_npy_object_array_needing_pickle_is_refused() -> None:
    body = npy(np.array([{"a": 1}, None], dtype=object))
    message = bad_request(body, ct.NPY).message
    assert message.startswith("NPY payload refused")
    assert "pickle" in message


def test_npy_plain_pickle_is_refused() -> None:
    import pickle

    assert "pickle" in bad_request(pickle.dumps([1.0, 2.0]), ct.NPY).message


@pytest.mark.parametrize(
    "array",
    [np.array(["a", "b"]), np.array([(1, 2.0)], dtype=[("x", "i4"), ("y", "f4")]), np.array([1j])],
)
def test_npy_non_numeric_arrays_are_400(array: np.ndarray) -> None:
    assert bad_request(npy(array), ct.NPY).message == "NPY array must be numeric"


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.array([1.0, np.nan], dtype=np.float32), "NaN or infinity"),
        (np.array([np.inf]), "NaN or infinity"),
        (np.zeros((0, 3), dtype=np.float32), "empty"),
    ],
)
def test_npy_nan_and_empty_are_400(array: np.ndarray, needle: str) -> None:
    assert needle in bad_request(npy(array), ct.NPY).message


def test_truncated_npy_is_400() -> None:
    body = npy(np.arange(100, dtype=np.float64))
    bad_request(body[:-8], ct.NPY)


_NPY_HEADER_BUGS = [
    pytest.param(b"PK\x03\x04 not really a zip", id="zip-magic"),
    pytest.param(
        npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)"),
        id="unterminated-header",
    ),
    pytest.param(
        npy_with_header("{'descr': '<i8',B'fortran_order': False, 'shape': (5,), }"),
        id="bytes-key-header",
    ),
    pytest.param(
        npy_with_header("{'descr': '<04', 'fortran_order': False, 'shape': (3, 4), }"),
        id="syntax-error-header",
    ),
]


@pytest.mark.parametrize("body", _NPY_HEADER_BUGS)
def test_npy_with_corrupt_header_is_400(body: bytes) -> None:
    bad_request(body, ct.NPY)


def test_npy_declaring_a_huge_shape_is_refused_without_allocating() -> None:
    body = npy_with_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**50},), }}")
    assert len(body) < 200
    with pytest.raises(ScorerError) as info:
        codecs.decode(body, ct.NPY, None)
    assert 400 <= info.value.status_code < 500


# --- dispatch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [ct.JSON, ct.CSV, ct.NPY])
def test_empty_tensor_body_is_400(content_type: str) -> None:
    assert bad_request(b"", content_type).message == "empty request body"


@pytest.mark.parametrize("content_type", ["application/xml", "text/plain", "multipart/form-data"])
def test_unsupported_content_type_is_415(content_type: str) -> None:
    with pytest.raises(UnsupportedContentTypeError) as info:
        codecs.decode(b"<x/>", content_type, None)
    assert info.value.status_code == 415
    assert repr(content_type) in info.value.message
    for supported in (ct.JSON, ct.CSV, ct.NPY, ct.JPEG, ct.PNG):
        assert supported in info.value.message


def test_missing_content_type_is_415_saying_none() -> None:
    with pytest.raises(UnsupportedContentTypeError) as info:
        codecs.decode(b"abc", "", None)
    assert "(none)" in info.value.message


# --- encoding -----------------------------------------------------------------------------------


def test_encode_json_turns_nan_and_infinity_into_null() -> None:
    value = {"a": [1.0, math.nan, math.inf], "b": np.array([-np.inf, 2.0]), "c": np.float32("nan")}
    body = codecs.encode_json(value)
    assert b"NaN" not in body and b"Infinity" not in body
    assert json.loads(body) == {"a": [1.0, None, None], "b": [None, 2.0], "c": None}


def test_encode_json_converts_numpy_and_tuples() -> None:
    value = {1: (np.int64(3), np.float32(0.5)), "m": np.arange(4).reshape(2, 2), "s": "x"}
    assert json.loads(codecs.encode_json(value)) == {"1": [3, 0.5], "m": [[0, 1], [2, 3]], "s": "x"}


def test_encode_json_of_an_unserialisable_object_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        codecs.encode_json({"x": object()})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(2.5), b"2.5\n"),
        (np.array([1.5, 8.0]), b"1.5,8.0\n"),
        (np.array([[1, 2], [3, 4]]), b"1,2\n3,4\n"),
        (np.arange(8).reshape(2, 2, 2), b"0,1,2,3\n4,5,6,7\n"),
        ([[0.5, 1.0]], b"0.5,1.0\n"),
    ],
)
def test_encode_csv(value: object, expected: bytes) -> None:
    assert codecs.encode_csv(value) == expected


def test_encode_npy_round_trips() -> None:
    array = np.array([[1.5, 8.0]], dtype=np.float32)
    decoded = np.load(io.BytesIO(codecs.encode_npy(array)), allow_pickle=False)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    ("accept", "check"),
    [
        (ct.JSON, lambda body: json.loads(body) == [[1.5, 8.0]]),
        (ct.CSV, lambda body: body == b"1.5,8.0\n"),
        (ct.NPY, lambda body: np.load(io.BytesIO(body)).tolist() == [[1.5, 8.0]]),
    ],
)
def test_encode_dispatches_on_accept(accept: str, check: object) -> None:
    body = codecs.encode(np.array([[1.5, 8.0]], dtype=np.float32), accept)
    assert check(body)  # type: ignore[operator]


@pytest.mark.parametrize("accept", ["image/png", "application/xml", "", "*/*"])
def test_encode_unsupported_accept_is_406(accept: str) -> None:
    with pytest.raises(UnsupportedAcceptError) as info:
        codecs.encode([1.0], accept)
    assert info.value.status_code == 406
    assert repr(accept) in info.value.message
    assert "application/json, text/csv, application/x-npy" in info.value.message


def test_encoders_cover_every_response_type() -> None:
    assert tuple(codecs.ENCODERS) == ct.RESPONSE_TYPES


@pytest.mark.parametrize("value", [b"\x00raw", bytearray(b"raw"), "text \u00e9"])
@pytest.mark.parametrize("accept", [ct.JSON, "image/png"])
def test_encode_passes_bytes_and_strings_through_whatever_the_accept(
    value: bytes | str, accept: str
) -> None:
    expected = value.encode() if isinstance(value, str) else bytes(value)
    assert codecs.encode(value, accept) == expected


def test_encode_turns_a_torch_tensor_into_its_array() -> None:
    import torch

    tensor = torch.tensor([[1.5, 8.0]], requires_grad=True) * 1
    assert codecs.encode(tensor, ct.CSV) == b"1.5,8.0\n"
    assert json.loads(codecs.encode(tensor, ct.JSON)) == [[1.5, 8.0]]


# --- scores: what the default predict_fn returns, in every response type -----------------------

SCORES = codecs.Scores(
    np.array([[0.25, -1.0], [2.0, 3.5]], dtype=np.float32), ["appeal", "clarity"], "m", "3"
)


def test_scores_as_json() -> None:
    assert json.loads(codecs.encode(SCORES, ct.JSON)) == {
        "scores": [{"appeal": 0.25, "clarity": -1.0}, {"appeal": 2.0, "clarity": 3.5}],
        "model": "m",
        "version": "3",
    }


def test_scores_as_csv_have_a_header_row() -> None:
    body = codecs.encode(SCORES, ct.CSV)
    assert body.decode().splitlines() == ["appeal,clarity", "0.25,-1.0", "2.0,3.5"]


def test_scores_as_npy_are_the_matrix() -> None:
    array = np.load(io.BytesIO(codecs.encode(SCORES, ct.NPY)), allow_pickle=False)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, SCORES.values)


# --- the registries -------------------------------------------------------------------------------


def test_decoders_are_a_registry_keyed_by_media_type() -> None:
    assert codecs.DECODERS[ct.JSON] is codecs.decode_json
    assert codecs.DECODERS[ct.CSV] is codecs.decode_csv
    assert codecs.DECODERS[ct.NPY] is codecs.decode_npy
    for media_type in ct.IMAGE_TYPES:
        assert codecs.DECODERS[media_type] is codecs.decode_raw_image
    assert set(codecs.DECODERS.supported()) == ct.IMAGE_TYPES | ct.TENSOR_TYPES


@pytest.mark.parametrize("media_type", ["image/gif", "image/bmp", "image/x-anything"])
def test_an_image_family_key_serves_every_image_type(media_type: str) -> None:
    assert media_type not in codecs.DECODERS
    assert codecs.DECODERS.find(media_type) is codecs.decode_raw_image
    assert codecs.DECODERS.lookup(media_type) is codecs.decode_raw_image


@pytest.mark.parametrize(
    ("registry", "media_type", "error"),
    [
        (codecs.DECODERS, "application/xml", UnsupportedContentTypeError),
        (codecs.DECODERS, "", UnsupportedContentTypeError),
        (codecs.ENCODERS, "image/png", UnsupportedAcceptError),
        (codecs.ENCODERS, "text/*", UnsupportedAcceptError),
    ],
)
def test_a_registry_miss_is_its_4xx_error(
    registry: codecs.CodecRegistry, media_type: str, error: type[ScorerError]
) -> None:
    assert registry.find(media_type) is None
    with pytest.raises(error) as info:
        registry.lookup(media_type)
    assert info.value.status_code in (406, 415)
    assert repr(media_type or "(none)") in info.value.message


def test_a_registered_decoder_serves_its_media_type(monkeypatch: pytest.MonkeyPatch) -> None:
    decoders = codecs.CodecRegistry(codecs._unsupported_content_type)
    for media_type in codecs.DECODERS:
        decoders.register(media_type, codecs.DECODERS[media_type])
    calls = []

    def decode_text(body: bytes, target: int | None, pool: object) -> np.ndarray:
        calls.append((target, pool))
        return np.array([float(v) for v in body.split()], dtype=np.float32)

    assert decoders.register("Text/Plain; charset=utf-8", decode_text) is decode_text
    monkeypatch.setattr(codecs, "DECODERS", decoders)
    np.testing.assert_array_equal(codecs.decode(b"1 2.5", "text/plain", 7), [1.0, 2.5])
    assert calls == [(7, SERIAL)]
    assert "text/plain" in decoders.supported()
    with pytest.raises(UnsupportedContentTypeError) as info:
        codecs.decode(b"x", "application/xml", None)
    assert "text/plain" in info.value.message


def test_an_empty_body_of_an_unknown_type_is_400_not_415() -> None:
    assert bad_request(b"", "application/xml").message == "empty request body"


# --- property: any bytes, any content type -> a value or a 4xx ScorerError ----------------------

_CONTENT_TYPES = [
    *sorted(ct.IMAGE_TYPES | ct.TENSOR_TYPES),
    "image/gif",
    "image/bmp",
    "image/tiff",
    "text/plain",
    "application/xml",
    "",
    "junk",
]
_NPY_HEADER = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")
# Each prefix with the content type whose decoder parses it: the fuzzer sends a prefixed body
# under that type half the time (any type otherwise), so every decoder's real parsing code is
# reached, NPY and TIFF (the two that had escapes: .npy zip magic and malformed headers, a
# corrupt TIFF tag; their regression tests are above and in test_images.py) included.
_PREFIXES = [
    (b"", ct.OCTET_STREAM),
    (b"\x89PNG\r\n\x1a\n", ct.PNG),
    (b"\xff\xd8\xff\xe0", ct.JPEG),
    (b"GIF89a", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ct.WEBP),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"II*\x00\x08\x00\x00\x00", "image/tiff"),  # little-endian, first IFD at offset 8
    (b"MM\x00*", "image/tiff"),
    (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),  # big-endian, first IFD at offset 8
    (b"\x93NUMPY", ct.NPY),
    (b"\x93NUMPY\x01\x00", ct.NPY),
    (b"\x93NUMPY\x02\x00", ct.NPY),
    (_NPY_HEADER, ct.NPY),  # a valid header: the fuzzed bytes are the data
    (b"PK\x03\x04", ct.NPY),  # zip magic: numpy would read an .npz archive
    (b'{"images": ["', ct.JSON),
    (b'{"instances": [[', ct.JSON),
    (b"[[", ct.JSON),
    (b"1,2,3\n", ct.CSV),
]
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["image", "images", "instances", "b64", "x"]), children)
    ),
    max_leaves=20,
)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """A body and a content type: raw bytes, a JSON value, or a decoder's prefix + bytes."""
    content_type = draw(st.sampled_from(_CONTENT_TYPES))
    kind = draw(st.sampled_from(["raw", "prefixed", "json"]))
    if kind == "json":
        return json.dumps(draw(_JSON_VALUES)).encode(), content_type
    if kind == "raw":
        return draw(st.binary(max_size=300)), content_type
    prefix, own_type = draw(st.sampled_from(_PREFIXES))
    if draw(st.booleans()):
        content_type = own_type
    return prefix + draw(st.binary(max_size=300)), content_type


def test_the_fuzzer_reaches_the_npy_and_tiff_decoders() -> None:
    npy_prefixes = [p for p, t in _PREFIXES if t == ct.NPY and p.startswith(b"\x93NUMPY")]
    tiff_prefixes = {p[:4] for p, t in _PREFIXES if t == "image/tiff"}
    assert npy_prefixes and tiff_prefixes == {b"II*\x00", b"MM\x00*"}
    # the prefixes are what real files start with, under types their decoders are found for
    np.testing.assert_array_equal(
        codecs.decode(_NPY_HEADER + np.zeros(6, "<f4").tobytes(), ct.NPY, None), np.zeros((2, 3))
    )
    tiff = image_bytes("TIFF", (20, 10))
    assert tiff[:4] in tiff_prefixes
    decoded = codecs.decode(tiff, "image/tiff", None)
    assert isinstance(decoded, ImageBatch) and decoded.images[0].size == (20, 10)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=_requests(), target=st.sampled_from([None, 32]))
def test_decode_returns_or_raises_a_client_error(
    sample: tuple[bytes, str], target: int | None
) -> None:
    body, content_type = sample
    try:
        decoded = codecs.decode(body, content_type, target)
    except ScorerError as exc:
        assert 400 <= exc.status_code < 500, exc
        assert exc.message
        return
    assert isinstance(decoded, (ImageBatch, np.ndarray))
    if isinstance(decoded, np.ndarray):
        assert decoded.dtype == np.float32
        assert np.isfinite(decoded).all()
    else:
        assert decoded.images and all(isinstance(i, Image.Image) for i in decoded.images)
        assert all(i.mode == "RGB" for i in decoded.images)


def test_json_batch_pixel_budget_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from scorer.errors import PayloadTooLargeError
    from tests.support.models import image_bytes

    monkeypatch.setattr(codecs, "MAX_BATCH_PIXELS", 320 * 240 * 2)
    image = base64.b64encode(image_bytes("PNG", (320, 240))).decode()
    assert (
        len(codecs.decode_json(f'{{"images": ["{image}", "{image}"]}}'.encode(), None).images) == 2
    )
    with pytest.raises(PayloadTooLargeError):
        codecs.decode_json(f'{{"images": ["{image}", "{image}", "{image}"]}}'.encode(), None)

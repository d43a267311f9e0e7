"""scorer's tensor codecs against the AWS sagemaker-inference toolkit's own as an oracle.

The toolkit (``sagemaker_inference.decoder``/``encoder``, 1.10.1; a dev dependency, never a
runtime one) is what existing SageMaker clients were written against. For JSON, CSV and NPY
tensors, scorer must give the same array for the same body (as float32, as the PyTorch
toolkit's ``default_input_fn`` feeds a model) and the same bytes for the same array. Where
scorer differs on purpose the difference is pinned here and written down in
``docs/contract.md`` ("The sagemaker-inference toolkit's codecs").

The toolkit's transformer decodes JSON and CSV bodies as UTF-8 text before its decoder sees
them, and its JSON/CSV encoders return text; the helpers below do the same.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sagemaker_inference import decoder as tk_decoder
from sagemaker_inference import encoder as tk_encoder
from sagemaker_inference import errors as tk_errors

from scorer.errors import (
    BadRequestError,
    ScorerError,
    UnsupportedAcceptError,
    UnsupportedContentTypeError,
)
from scorer.inference import codecs
from scorer.inference import content_types as ct

ORACLE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def tk_decode(body: bytes, content_type: str) -> Any:
    """The toolkit's decode, given what its transformer gives it (text for JSON and CSV)."""
    data: bytes | str = body.decode("utf-8") if content_type in (ct.JSON, ct.CSV) else body
    return tk_decoder.decode(data, content_type)


def tk_encode(value: Any, accept: str) -> bytes:
    """The toolkit's encode, as bytes (its JSON and CSV encoders return text)."""
    out = tk_encoder.encode(value, accept)
    return out.encode("utf-8") if isinstance(out, str) else out


def scorer_decode(body: bytes, content_type: str) -> np.ndarray:
    decoded = codecs.decode(body, content_type, None)
    assert isinstance(decoded, np.ndarray)
    assert decoded.dtype == np.float32  # scorer always feeds the model float32
    return decoded


def assert_same_array(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Same shape, same values once the toolkit's array is float32 as well."""
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, np.asarray(theirs).astype(np.float32))


# --- arrays the oracle is asked about: finite, non-empty, inside float32's range -----------------

_FLOAT = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False)
_FLOAT32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
_INT = st.integers(-(2**31), 2**31)


def _dtype_elements(dtype: str) -> st.SearchStrategy[Any]:
    kind = np.dtype(dtype).kind
    if kind == "f":
        size = np.dtype(dtype).itemsize
        if size == 2:
            return st.floats(allow_nan=False, allow_infinity=False, width=16)
        return _FLOAT32 if size == 4 else _FLOAT
    if kind == "b":
        return st.booleans()
    if kind == "u":
        return st.integers(0, np.iinfo(dtype).max)
    return st.integers(max(np.iinfo(dtype).min, -(2**31)), min(np.iinfo(dtype).max, 2**31))


@st.composite
def tensors(draw: st.DrawFn, dtypes: list[str], min_dims: int = 1, max_dims: int = 3) -> np.ndarray:
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=5))
    array = draw(hnp.arrays(dtype, shape, elements=_dtype_elements(dtype)))
    return np.asfortranarray(array) if draw(st.booleans()) else array


JSON_DTYPES = ["<f4", "<f8", "<i8", "<i4", "|u1", "|b1"]
CSV_DTYPES = ["<f4", "<f8", "<i8", "|u1"]  # booleans print as True/False, which no CSV parses
NPY_DTYPES = ["<f4", ">f4", "<f8", ">f8", "<i8", ">i4", "<i2", "|u1", "|i1", "|b1", "<f2"]


# --- decoding: the same body gives the same array ------------------------------------------------


@ORACLE
@given(array=tensors(JSON_DTYPES))
def test_json_tensor_decodes_as_the_toolkit_does(array: np.ndarray) -> None:
    body = tk_encode(array, ct.JSON)
    assert_same_array(scorer_decode(body, ct.JSON), tk_decode(body, ct.JSON))


@pytest.mark.parametrize(
    "body",
    [b"[1, 2, 3]", b"[[1.5, -2.25e3], [0, 1e-7]]", b"[[[1], [2]], [[3], [4]]]", b"[true, false]"],
)
def test_hand_written_json_tensors_decode_as_the_toolkit_does(body: bytes) -> None:
    assert_same_array(scorer_decode(body, ct.JSON), tk_decode(body, ct.JSON))


@ORACLE
@given(array=tensors(CSV_DTYPES, min_dims=2, max_dims=2))
def test_csv_tensor_decodes_as_the_toolkit_does(array: np.ndarray) -> None:
    rows, columns = array.shape
    body = tk_encode(array, ct.CSV)
    ours, theirs = scorer_decode(body, ct.CSV), tk_decode(body, ct.CSV)
    if columns > 1:
        # one row is a vector in both, as numpy's genfromtxt squeezes it
        assert_same_array(ours, theirs)
    else:
        # documented difference: the toolkit squeezes a one-column CSV to (rows,) (or to a
        # 0-d array for a single value); scorer keeps a batch of rows, (rows, 1), or (1,)
        assert theirs.shape == ((rows,) if rows > 1 else ())
        assert ours.shape == ((rows, 1) if rows > 1 else (1,))
        np.testing.assert_array_equal(ours.ravel(), theirs.astype(np.float32).ravel())


@pytest.mark.parametrize(
    "body", [b"1,2,3,4\n", b"1.5,2\n3,4e2\n", b"0.1,-0.2\r\n0.3,0.4\r\n", b"7,8,9"]
)
def test_hand_written_csv_tensors_decode_as_the_toolkit_does(body: bytes) -> None:
    theirs = tk_decode(body, ct.CSV)
    if theirs.dtype.names:  # genfromtxt(dtype=None) types each column: int and float mixed
        theirs = np.array(theirs.tolist(), dtype=np.float64)
    assert_same_array(scorer_decode(body, ct.CSV), theirs)


@ORACLE
@given(array=tensors(NPY_DTYPES, max_dims=4))
def test_npy_tensor_decodes_as_the_toolkit_does(array: np.ndarray) -> None:
    body = tk_encode(array, ct.NPY)
    assert_same_array(scorer_decode(body, ct.NPY), tk_decode(body, ct.NPY))


# --- encoding: the same array gives the same bytes ----------------------------------------------


@ORACLE
@given(array=tensors(JSON_DTYPES, min_dims=0, max_dims=3))
def test_json_encoding_is_byte_for_byte_the_toolkits(array: np.ndarray) -> None:
    assert codecs.encode(array, ct.JSON) == tk_encode(array, ct.JSON)


@pytest.mark.parametrize(
    "value",
    [
        [[1.5, 8.0]],
        np.float32(0.1),
        np.int64(7),
        3,
        {"scores": np.array([0.25, 1.0], dtype=np.float32), "n": np.int64(2), "ok": True},
        {"nested": [{"a": np.arange(3)}, "text", None]},
    ],
    ids=["list", "float32", "int64", "int", "dict", "nested"],
)
def test_json_encoding_of_python_and_numpy_values_is_the_toolkits(value: Any) -> None:
    assert codecs.encode(value, ct.JSON) == tk_encode(value, ct.JSON)


@ORACLE
@given(array=tensors([*CSV_DTYPES, "|b1"], min_dims=2, max_dims=2))
def test_csv_encoding_of_a_matrix_is_byte_for_byte_the_toolkits(array: np.ndarray) -> None:
    assert codecs.encode(array, ct.CSV) == tk_encode(array, ct.CSV)


@ORACLE
@given(array=tensors(NPY_DTYPES, min_dims=0, max_dims=4))
def test_npy_encoding_is_byte_for_byte_the_toolkits(array: np.ndarray) -> None:
    assert codecs.encode(array, ct.NPY) == tk_encode(array, ct.NPY)


def test_a_torch_tensor_encodes_as_the_toolkit_encodes_its_array() -> None:
    import torch

    tensor = torch.tensor([[1.5, -2.0], [0.125, 8.0]])
    for accept in (ct.JSON, ct.CSV, ct.NPY):
        assert codecs.encode(tensor, accept) == tk_encode(tensor.numpy(), accept)


# --- where scorer differs on purpose (docs/contract.md) -----------------------------------------


def test_json_tensors_with_nan_or_infinity_are_400_where_the_toolkit_passes_them_on() -> None:
    body = b"[1.0, NaN, Infinity]"
    theirs = tk_decode(body, ct.JSON)
    assert math.isnan(theirs[1]) and math.isinf(theirs[2])
    with pytest.raises(BadRequestError, match="NaN"):
        codecs.decode(body, ct.JSON, None)


def test_nan_in_a_response_is_null_where_the_toolkit_writes_invalid_json() -> None:
    array = np.array([1.0, np.nan, np.inf, -np.inf])
    assert tk_encode(array, ct.JSON) == b"[1.0, NaN, Infinity, -Infinity]"  # not JSON
    assert codecs.encode(array, ct.JSON) == b"[1.0, null, null, null]"
    assert json.loads(codecs.encode(array, ct.JSON)) == [1.0, None, None, None]


@pytest.mark.parametrize(
    ("value", "ours"),
    [
        (np.array([1.5, 8.0]), b"1.5,8.0\n"),  # the toolkit writes a column: "1.5\n8.0\n"
        (np.float32(2.5), b"2.5\n"),  # the toolkit: ValueError (a 500)
        (np.arange(8).reshape(2, 2, 2), b"0,1,2,3\n4,5,6,7\n"),  # the toolkit: ValueError
    ],
    ids=["vector", "scalar", "3-d"],
)
def test_csv_encoding_of_other_ranks_differs(value: np.ndarray, ours: bytes) -> None:
    assert codecs.encode(value, ct.CSV) == ours
    if np.ndim(value) == 1:
        assert tk_encode(value, ct.CSV) == b"1.5\n8.0\n"
        # scorer's row decodes back to the same vector; the toolkit's column to (2, 1) there
        np.testing.assert_array_equal(scorer_decode(ours, ct.CSV), value)
    else:
        with pytest.raises(ValueError):
            tk_encode(value, ct.CSV)


calls: list[str] = []


def _record(marker: str) -> list[float]:
    calls.append(marker)
    return [1.0, 2.0]


class _Payload:
    """Unpickling this runs ``_record``: what a hostile .npy body could run instead."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record, ("unpickled",)


@pytest.mark.parametrize(
    "body",
    [
        pickle.dumps(_Payload()),
        tk_encode(np.array([_Payload()], dtype=object), ct.NPY),
    ],
    ids=["raw-pickle", "object-array"],
)
def test_npy_pickles_are_never_loaded_where_the_toolkit_runs_them(body: bytes) -> None:
    calls.clear()
    tk_decode(body, ct.NPY)  # np.load(allow_pickle=True): the payload's code runs
    assert calls == ["unpickled"]
    calls.clear()
    with pytest.raises(BadRequestError, match="pickle"):
        codecs.decode(body, ct.NPY, None)
    assert calls == []


def test_npy_responses_are_never_pickled_where_the_toolkit_pickles_them() -> None:
    array = np.array([{"a": 1}], dtype=object)
    assert b"\x80" in tk_encode(array, ct.NPY)  # a pickle inside the .npy
    with pytest.raises(ValueError, match="allow_pickle"):
        codecs.encode(array, ct.NPY)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", ct.JSON),  # json.JSONDecodeError
        (b"1,2\n3", ct.CSV),  # genfromtxt: "Some errors were detected"
        (b"\x93NUMPY\x01\x00", ct.NPY),  # truncated header
    ],
    ids=["json", "ragged-csv", "truncated-npy"],
)
def test_malformed_bodies_are_400_where_the_toolkit_raises_a_500(
    body: bytes, content_type: str
) -> None:
    with pytest.raises(Exception) as theirs:
        tk_decode(body, content_type)
    # not a BaseInferenceToolkitError: the toolkit's transformer answers 500 with the trace
    assert not isinstance(theirs.value, tk_errors.BaseInferenceToolkitError)
    with pytest.raises(BadRequestError) as ours:
        codecs.decode(body, content_type, None)
    assert ours.value.status_code == 400
    assert "Traceback" not in ours.value.message


def _structured(array: Any) -> bool:
    return array.dtype.names is not None


def _empty(array: Any) -> bool:
    return array.size == 0


def _scalar(array: Any) -> bool:
    return array.ndim == 0


@pytest.mark.parametrize(
    ("body", "content_type", "theirs"),
    [
        (b"1,abc\n", ct.CSV, _structured),  # a record holding the string 'abc'
        (b"[]", ct.JSON, _empty),
        (b"5", ct.JSON, _scalar),
        (b"[1e39]", ct.JSON, lambda a: a.astype(np.float32)[0] == np.inf),  # float32 overflow
    ],
    ids=["text-in-csv", "empty", "scalar", "overflow"],
)
def test_bodies_the_toolkit_hands_to_the_model_unchecked_are_400(
    body: bytes, content_type: str, theirs: Any
) -> None:
    with np.errstate(over="ignore"):
        assert theirs(tk_decode(body, content_type))
        with pytest.raises(BadRequestError):
            codecs.decode(body, content_type, None)


def test_unsupported_types_are_415_and_406_where_the_toolkit_raises_a_500() -> None:
    for call in (lambda: tk_decode(b"x", "application/xml"), lambda: tk_encode([1], "image/png")):
        with pytest.raises(tk_errors.UnsupportedFormatError) as theirs:
            call()
        assert not isinstance(theirs.value, tk_errors.BaseInferenceToolkitError)  # a 500
    with pytest.raises(UnsupportedContentTypeError) as decode_error:
        codecs.decode(b"x", "application/xml", None)
    with pytest.raises(UnsupportedAcceptError) as encode_error:
        codecs.encode([1], "image/png")
    assert (decode_error.value.status_code, encode_error.value.status_code) == (415, 406)


def test_content_type_parameters_are_ignored_where_the_toolkit_refuses_them() -> None:
    header = "application/json; charset=utf-8"
    with pytest.raises(tk_errors.UnsupportedFormatError):
        tk_decode(b"[1, 2]", header)
    np.testing.assert_array_equal(scorer_decode(b"[1, 2]", ct.media_type(header)), [1.0, 2.0])


def test_every_scorer_decode_error_is_a_client_error() -> None:
    """The property the oracle cannot give: scorer's errors are all 4xx ScorerErrors."""
    for body, content_type in [(b"\xff\xfe", ct.JSON), (b"\xff", ct.CSV), (b"PK\x03\x04", ct.NPY)]:
        with pytest.raises(ScorerError) as info:
            codecs.decode(body, content_type, None)
        assert 400 <= info.value.status_code < 500


def test_the_toolkit_is_not_imported_by_scorer_at_run_time() -> None:
    """sagemaker-inference is a test oracle only: the served code never imports it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import scorer.serving.handler_service, scorer.inference.chain\n"
        "print(any(m.split('.')[0] == 'sagemaker_inference' for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_encoded_npy_round_trips_through_the_toolkit() -> None:
    array = np.array([[1.5, 8.0]], dtype=np.float32)
    theirs = tk_decode(codecs.encode(array, ct.NPY), ct.NPY)
    assert theirs.dtype == np.float32
    np.testing.assert_array_equal(theirs, array)
    np.testing.assert_array_equal(np.load(io.BytesIO(tk_encode(array, ct.NPY))), array)

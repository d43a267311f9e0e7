"""scorer.inference.content_types: media type parsing and Accept negotiation."""

from __future__ import annotations

import pytest

from scorer.inference import content_types as ct


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ""),
        ("", ""),
        ("application/json", "application/json"),
        ("Application/JSON", "application/json"),
        ("  text/csv ; charset=utf-8", "text/csv"),
        ("image/jpeg;q=0.9", "image/jpeg"),
        ("application/x-npy; a=b; c=d", "application/x-npy"),
    ],
)
def test_media_type_drops_parameters_and_lowercases(header: str | None, expected: str) -> None:
    assert ct.media_type(header) == expected


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, ct.JSON, ct.JSON),
        ("", ct.JSON, ct.JSON),
        ("   ", ct.CSV, ct.CSV),
        ("*/*", ct.JSON, ct.JSON),
        ("*/*", ct.CSV, ct.CSV),
        ("application/*", ct.NPY, ct.NPY),
        ("text/*", ct.JSON, ct.CSV),
        ("application/json", ct.CSV, ct.JSON),
        ("text/csv", ct.JSON, ct.CSV),
        ("application/x-npy", ct.JSON, ct.NPY),
        ("TEXT/CSV; charset=utf-8", ct.JSON, ct.CSV),
        ("image/png, application/x-npy", ct.JSON, ct.NPY),
        ("text/html, */*", ct.CSV, ct.CSV),
        ("text/csv, application/json", ct.JSON, ct.CSV),
        ("image/png", ct.JSON, None),
        ("application/xml, text/html", ct.JSON, None),
    ],
)
def test_choose_accept(header: str | None, default: str, expected: str | None) -> None:
    assert ct.choose_accept(header, default) == expected


def test_type_sets() -> None:
    assert ct.RESPONSE_TYPES == (ct.JSON, ct.CSV, ct.NPY)
    assert set(ct.RESPONSE_TYPES) == ct.TENSOR_TYPES
    assert not ct.IMAGE_TYPES & ct.TENSOR_TYPES
    assert {ct.JPEG, ct.PNG, ct.WEBP, ct.X_IMAGE, ct.OCTET_STREAM, "image/jpg"} == ct.IMAGE_TYPES


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("text/plain", "text/plain"),
        ("image/png, text/plain", "text/plain"),
        ("application/json", None),  # not in the set given
        ("*/*", ct.JSON),
    ],
)
def test_choose_accept_from_the_types_given(header: str, expected: str | None) -> None:
    assert ct.choose_accept(header, ct.JSON, ("text/plain", ct.CSV)) == expected

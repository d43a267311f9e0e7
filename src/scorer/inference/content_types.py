"""Content-type names and parsing (``type/subtype; params`` -> ``type/subtype``)."""

from __future__ import annotations

from collections.abc import Collection

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"
X_IMAGE = "application/x-image"
JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
ANY = "*/*"

IMAGE_TYPES = frozenset({JPEG, PNG, WEBP, X_IMAGE, OCTET_STREAM, "image/jpg"})
TENSOR_TYPES = frozenset({JSON, CSV, NPY})
RESPONSE_TYPES = (JSON, CSV, NPY)


def media_type(header: str | None) -> str:
    """The bare lower-case media type of a Content-Type header (parameters dropped)."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def choose_accept(
    header: str | None, default: str, supported: Collection[str] = RESPONSE_TYPES
) -> str | None:
    """Pick the first ``supported`` response type from an Accept header.

    ``*/*``, ``application/*`` or an empty header give ``default``; returns None when the
    header names only unsupported types.
    """
    if not header or not header.strip():
        return default
    for part in header.split(","):
        candidate = media_type(part)
        if candidate in supported:
            return candidate
        if candidate in {ANY, "application/*", "text/*"}:
            if candidate == "text/*":
                return CSV
            return default
    return None

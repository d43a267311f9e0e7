"""Model keys (SageMaker's ``TargetModel``): validation and the model server name they map to.

A key is a relative name under the model prefix (``creative-v3.tar.gz``,
``market/fr.tar.gz``). SageMaker extracts each model to ``/opt/ml/models/<hash>/model`` and
registers it under an opaque name; scorer uses the first :data:`HASH_CHARS` hex digits of
the key's sha256 as both the directory name and the model server's model name.
"""

from __future__ import annotations

import hashlib

from scorer.cache.errors import InvalidModelKeyError

MAX_KEY_LENGTH = 1024
"""The longest TargetModel SageMaker Runtime accepts (botocore's ``TargetModelHeader``)."""
HASH_CHARS = 32
"""Hex digits of the key's sha256 kept for the model name (128 bits)."""


def validate_model_key(key: str) -> str:
    """Return ``key`` if it is a safe relative name under the model prefix.

    Refused: empty keys, keys over :data:`MAX_KEY_LENGTH` characters, absolute keys,
    backslashes, NUL and other control characters, leading or trailing whitespace, and
    empty, ``.`` or ``..`` path components.

    Raises:
        InvalidModelKeyError: the key is refused; the message says why.
    """
    if not isinstance(key, str) or not key:
        raise InvalidModelKeyError("the target model name is empty")
    shown = key if len(key) <= 80 else key[:77] + "..."
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidModelKeyError(
            f"the target model name is longer than {MAX_KEY_LENGTH} characters"
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise InvalidModelKeyError(f"the target model name {shown!r} has a control character")
    if key != key.strip():
        raise InvalidModelKeyError(
            f"the target model name {shown!r} starts or ends with whitespace"
        )
    if "\\" in key:
        raise InvalidModelKeyError(f"the target model name {shown!r} has a backslash")
    if key.startswith("/"):
        raise InvalidModelKeyError(
            f"the target model name {shown!r} is absolute; name it relative to the model prefix"
        )
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidModelKeyError(
            f"the target model name {shown!r} has an empty, '.' or '..' path component"
        )
    return key


def model_hash(key: str) -> str:
    """The model server name and cache directory name of a (validated) key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:HASH_CHARS]

"""An S3 prefix that holds model archives (``s3://bucket/prefix/``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Prefix:
    """A bucket and a key prefix that is empty or ends with ``/``."""

    bucket: str
    key_prefix: str

    @property
    def url(self) -> str:
        """The prefix as an ``s3://`` URL, the form SageMaker's ``ModelDataUrl`` takes."""
        return f"s3://{self.bucket}/{self.key_prefix}"


def parse_s3_prefix(url: str, key: str = "model_data_prefix") -> S3Prefix:
    """Parse ``s3://bucket/prefix/``; a missing trailing ``/`` is added.

    SageMaker appends the ``TargetModel`` to a multi-model ``ModelDataUrl``, so the prefix
    is normalised to end with ``/`` (``s3://b/models`` would otherwise also match
    ``s3://b/models-old/...``).

    Raises:
        ValueError: not an ``s3://`` URL with a valid bucket name.
    """
    if not url.startswith("s3://"):
        raise ValueError(f"{key} {url!r} is not an S3 URL; expected s3://bucket/prefix/")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{key} {url!r} does not start with a valid bucket name")
    if key and not key.endswith("/"):
        key += "/"
    if key.startswith("/") or "//" in key:
        raise ValueError(f"{key} {url!r} has an empty path segment")
    return S3Prefix(bucket=bucket, key_prefix=key)

"""Where model archives come from: a local directory or an S3 prefix (``s3://bucket/prefix/``).

A source puts one archive, named by a validated key relative to its prefix, at a path the
cache chose (a download, a copy, or a hard link for a local file). Sources know nothing of
extraction or the model server.

S3 goes through boto3 with the standard configuration chain (credentials, region,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``), so any S3-compatible server works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from scorer.cache.errors import ModelSourceError
from scorer.errors import ModelNotFoundError
from scorer.models.archive import UnsafeArchiveError

_CHUNK = 1 << 20
S3_SCHEME = "s3://"


@runtime_checkable
class ModelSource(Protocol):
    """A place model archives are fetched from."""

    @property
    def uri(self) -> str:
        """The prefix, for messages and logs (``/models/``, ``s3://bucket/prefix/``)."""
        ...

    async def fetch(self, key: str, dest: Path, max_bytes: int) -> int:
        """Put the archive named ``key`` at the new path ``dest`` (a copy, or a hard link to
        a local file: the cache only reads it and then unlinks it); return its size.

        Raises:
            ModelNotFoundError: no archive has that key.
            UnsafeArchiveError: the archive is larger than ``max_bytes``.
            ModelSourceError: the source failed.
        """
        ...


def _too_large(uri: str, max_bytes: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"model archive {uri} is larger than {max_bytes} bytes")


class DirectorySource:
    """Archives in a local directory: ``key`` is a path relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @property
    def uri(self) -> str:
        """The directory, with a trailing separator."""
        return str(self.root) + os.sep

    def _path(self, key: str) -> Path:
        path = self.root / key
        root = self.root.resolve()
        try:
            resolved = path.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFoundError(f"model {key!r} not found under {self.uri}") from None
        except OSError as exc:
            raise ModelSourceError(f"cannot read model {key!r} under {self.uri}: {exc}") from None
        if not resolved.is_relative_to(root):
            raise ModelNotFoundError(f"model {key!r} not found under {self.uri}")
        return resolved

    def _copy(self, key: str, dest: Path, max_bytes: int) -> int:
        path = self._path(key)
        try:
            with open(path, "rb") as src:
                info = os.fstat(src.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ModelNotFoundError(f"model {key!r} under {self.uri} is not a file")
                if info.st_size > max_bytes:
                    raise _too_large(f"{self.uri}{key}", max_bytes)
                if _link_same_file(path, info, dest):
                    return info.st_size
                with open(dest, "xb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                    return out.tell()
        except IsADirectoryError:
            raise ModelNotFoundError(f"model {key!r} under {self.uri} is not a file") from None
        except OSError as exc:
            raise ModelSourceError(f"cannot read model {key!r} under {self.uri}: {exc}") from None

    async def fetch(self, key: str, dest: Path, max_bytes: int) -> int:
        """Hard-link ``root/key`` at ``dest``, or copy it where a link cannot be made (another
        file system, not permitted); a key resolving outside the root is not found."""
        return await asyncio.to_thread(self._copy, key, dest, max_bytes)


def _link_same_file(path: Path, opened: os.stat_result, dest: Path) -> bool:
    """Hard-link ``path`` at ``dest`` if it still names the file that was opened and checked
    (``opened``); False, leaving nothing at ``dest``, where that is not so or not possible
    (another file system, a link limit, a read-only mount)."""
    try:
        os.link(path, dest, follow_symlinks=False)
    except OSError:
        return False
    try:
        linked = os.stat(dest, follow_symlinks=False)
    except OSError:
        linked = None
    if linked is None or (linked.st_dev, linked.st_ino) != (opened.st_dev, opened.st_ino):
        dest.unlink(missing_ok=True)  # replaced meanwhile: copy the opened file instead
        return False
    return True


class S3Source:
    """Archives under ``s3://bucket/prefix``: ``key`` is appended to the prefix."""

    def __init__(
        self, bucket: str, prefix: str = "", client_factory: Callable[[], Any] | None = None
    ) -> None:
        """Args:
        bucket: the bucket name.
        prefix: the key prefix; a trailing ``/`` is added when missing (as for SageMaker's
            ``ModelDataUrl`` of a multi-model endpoint).
        client_factory: returns a boto3 S3 client; default ``boto3.session.Session().client
            ("s3")``, created on first use (standard credential and endpoint configuration).
        """
        if not bucket:
            raise ValueError("S3Source needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._client_factory = client_factory or _default_s3_client
        self._client: Any = None

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix/``."""
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"

    def _s3(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _download(self, key: str, dest: Path, max_bytes: int) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        uri = f"{self.uri}{key}"
        try:
            response = self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ModelNotFoundError(f"model {key!r} not found under {self.uri}") from None
            message = error.get("Message") or code
            raise ModelSourceError(f"cannot fetch {uri}: {code}: {message}") from None
        except BotoCoreError as exc:
            raise ModelSourceError(f"cannot fetch {uri}: {exc}") from None
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > max_bytes:
                raise _too_large(uri, max_bytes)
            written = 0
            with open(dest, "xb") as out:
                while chunk := body.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_large(uri, max_bytes)
                    out.write(chunk)
            return written
        except BotoCoreError as exc:
            raise ModelSourceError(f"cannot fetch {uri}: {exc}") from None
        finally:
            body.close()

    async def fetch(self, key: str, dest: Path, max_bytes: int) -> int:
        """Download ``s3://bucket/prefix/key`` to ``dest`` (in a worker thread)."""
        return await asyncio.to_thread(self._download, key, dest, max_bytes)


def _default_s3_client() -> Any:
    import boto3

    return boto3.session.Session().client("s3")


def open_source(prefix: str) -> ModelSource:
    """The source for a model prefix: ``s3://bucket/prefix/`` or a local directory.

    Raises:
        ValueError: the prefix is empty or an ``s3://`` URI has no bucket.
    """
    if not prefix:
        raise ValueError("the model prefix is empty")
    if prefix.startswith(S3_SCHEME):
        bucket, _, key_prefix = prefix[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"the S3 model prefix {prefix!r} has no bucket")
        return S3Source(bucket, key_prefix)
    if "://" in prefix:
        raise ValueError(f"unsupported model prefix {prefix!r}: use a directory or s3://")
    return DirectorySource(Path(prefix))

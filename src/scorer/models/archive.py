"""Model archives (``model.tar.gz``): reproducible packing, checking and safe extraction.

SageMaker multi-model endpoints serve archives with the model files at the archive root
and the user's code under ``code/``::

    spec.json
    model.safetensors
    code/inference.py
    code/requirements.txt

:func:`pack_directory` and :func:`pack_files` write such archives byte for byte
reproducibly: entries sorted, directories included, mtime 0, owner 0/0 with empty names,
modes normalised to 0644/0755, PAX format, and a gzip header with no name and mtime 0. The
same inputs give the same sha256 (with the same zlib; the digest is what infrastructure
names uploaded assets by).

:func:`safe_extract` and :func:`check_archive` read archives from anyone. Policy: only
regular files and directories with plain relative names are accepted; every link (symbolic
or hard, wherever it points), device, FIFO and sparse member is refused, because a model
archive never needs one. Sizes and the member count are capped while streaming, the
destination is written through directory descriptors that never follow a symlink, and a
failed extraction leaves nothing behind.

Standard library only (no torch): the model cache and the local emulator use this module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import hashlib
import importlib
import io
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from scorer.errors import ModelLoadError

ARCHIVE_MTIME = 0
"""The mtime of every packed entry (and of the gzip header)."""
GZIP_LEVEL = 6
"""The gzip compression level of packed archives (part of their reproducible bytes)."""
FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755

_log = logging.getLogger(__name__)

_GIB = 1 << 30
_CHUNK = 1 << 20
_MAX_READ = _CHUNK  # tarfile reads headers in one call; a bigger request is a header bomb
_GZIP_INPUT = 64 << 10  # compressed bytes per inflate call (measured faster than 1 MiB)
_GZIP_FIRST = 1 << 10  # ... starting from this at each gzip member, doubling per call
_MEMBER_OVERHEAD = 16 << 10  # header, PAX/GNU long-name records, data padding
_TRAILER_ALLOWANCE = 1 << 20  # end-of-archive blocks and record padding
# tarfile's extraction filters (PEP 706) came in Python 3.11.4; Debian bookworm's python3.11
# (the image's base) is 3.11.2 and has neither. scorer's own checks are the policy; the
# filter is a second check where the interpreter has it.
_DATA_FILTER = getattr(tarfile, "data_filter", None)
_FILTER_ERROR: type[Exception] = getattr(tarfile, "FilterError", tarfile.TarError)
_MAX_NAME_BYTES = 1024
_MAX_COMPONENT_BYTES = 255
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_DRIVE = re.compile(r"^[A-Za-z]:")
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}
_OTHER_FORMATS = (
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHECK_ROOT = os.path.join(os.sep, "scorer-archive-check")


def _inflate_module() -> ModuleType:
    """zlib-ng's zlib-compatible module when installed (inflates about 1.4x faster), else zlib."""
    try:
        return importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib is the fallback
        return zlib


_INFLATE = _inflate_module()
_GZIP_ERRORS: tuple[type[Exception], ...] = (gzip.BadGzipFile, zlib.error, _INFLATE.error)


class ArchiveError(ModelLoadError):
    """The archive is corrupt, truncated, not a tar/tar.gz archive, or cannot be packed."""

    status_code = HTTPStatus.BAD_REQUEST


class UnsafeArchiveError(ArchiveError):
    """A member could write outside the destination, is a link or special file, or the
    archive exceeds a size or member-count limit."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while reading an archive.

    Attributes:
        max_total_bytes: the most bytes all files together may unpack to.
        max_file_bytes: the most bytes one file may unpack to.
        max_members: the most entries (files and directories) the archive may hold.
    """

    max_total_bytes: int = 20 * _GIB
    max_file_bytes: int = 20 * _GIB
    max_members: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_file_bytes", "max_members"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ArchiveEntry:
    """One accepted member: its normalised relative path (``code/inference.py``)."""

    path: str
    size: int
    is_dir: bool
    executable: bool


@dataclass(frozen=True)
class ArchiveListing:
    """What :func:`check_archive` found: the entries in archive order."""

    entries: tuple[ArchiveEntry, ...]
    total_bytes: int
    sha256: str
    compressed: bool

    @property
    def files(self) -> tuple[str, ...]:
        """The regular files' paths, in archive order."""
        return tuple(entry.path for entry in self.entries if not entry.is_dir)


@dataclass(frozen=True)
class ExtractReport:
    """What :func:`safe_extract` wrote."""

    dest: Path
    files: tuple[str, ...]
    total_bytes: int
    sha256: str
    duration_s: float


# --------------------------------------------------------------------------- packing


def pack_directory(src_dir: Path, out_path: Path) -> str:
    """Pack a model directory into a reproducible ``model.tar.gz``.

    The directory's contents go at the archive root (``spec.json``, ``code/inference.py``);
    empty directories are kept. The archive is written to a temporary file beside
    ``out_path`` and renamed into place, so ``out_path`` is never seen half-written.

    Args:
        src_dir: the model directory.
        out_path: where to write the archive; its parent must exist and it must not lie
            inside ``src_dir``.

    Returns:
        The sha256 hex digest of the written archive.

    Raises:
        ArchiveError: ``src_dir`` is not a directory, holds a symbolic link or a special
            file, has a name that :func:`safe_extract` would refuse, or ``out_path`` is
            inside it.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ArchiveError(f"cannot pack {src}: not a directory")
    out = Path(out_path).absolute()
    if out.resolve().is_relative_to(src.resolve()):
        raise ArchiveError(f"cannot pack {src} into {out}: the archive would be inside it")
    dirs: set[str] = set()
    files: dict[str, Path | bytes] = {}
    pending = [(src, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as listing:
            for item in listing:
                rel = prefix + item.name
                name = _pack_name(rel)
                mode = item.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"cannot pack {rel!r}: symbolic links are not packed")
                if stat.S_ISDIR(mode):
                    dirs.add(name)
                    pending.append((Path(item.path), rel + "/"))
                elif stat.S_ISREG(mode):
                    files[name] = Path(item.path)
                else:
                    raise ArchiveError(f"cannot pack {rel!r}: not a regular file or directory")
    return _write_archive(dirs, files, out, follow_links=False)


def pack_files(entries: Mapping[str, Path | bytes], out_path: Path) -> str:
    """Pack named files into a reproducible ``model.tar.gz``.

    Parent directories are added for names with a ``/``. A :class:`~pathlib.Path` value is
    read from disk (symbolic links followed: the caller named it) and keeps its executable
    bit; a ``bytes`` value becomes a 0644 file.

    Args:
        entries: archive name (``spec.json``, ``code/inference.py``) -> content.
        out_path: where to write the archive (written beside it, then renamed).

    Returns:
        The sha256 hex digest of the written archive.

    Raises:
        ArchiveError: a name is unsafe, repeated, or both a file and a directory, or a path
            is not a regular file.
    """
    dirs: set[str] = set()
    files: dict[str, Path | bytes] = {}
    for raw_name, source in entries.items():
        name = _pack_name(raw_name)
        if not name:
            raise ArchiveError(f"cannot pack {raw_name!r}: names the archive root")
        if name in files:
            raise ArchiveError(f"cannot pack {raw_name!r}: {name!r} is named twice")
        if isinstance(source, bytes):
            files[name] = source
        elif isinstance(source, os.PathLike):
            files[name] = Path(source)
        else:
            raise TypeError(f"{raw_name!r}: expected Path or bytes, got {type(source).__name__}")
        dirs.update(_parents(name))
    clash = sorted(dirs & files.keys())
    if clash:
        raise ArchiveError(f"cannot pack {clash[0]!r}: it is both a file and a directory")
    return _write_archive(dirs, files, Path(out_path).absolute(), follow_links=True)


def _pack_name(name: str) -> str:
    try:
        return _clean_name(name)
    except ValueError as exc:
        raise ArchiveError(f"cannot pack {name!r}: the name {exc}") from None


def _write_archive(
    dirs: set[str], files: Mapping[str, Path | bytes], out: Path, *, follow_links: bool
) -> str:
    names = sorted(dirs | files.keys(), key=lambda name: name.split("/"))
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingWriter(raw)
            with (
                gzip.GzipFile(
                    filename="",
                    mode="wb",
                    fileobj=sink,
                    mtime=ARCHIVE_MTIME,
                    compresslevel=GZIP_LEVEL,
                ) as gz,
                tarfile.open(
                    fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
                ) as tar,
            ):
                for name in names:
                    source = files.get(name)
                    if source is None:
                        tar.addfile(_tar_info(name, tarfile.DIRTYPE, 0, DIR_MODE))
                    else:
                        _add_file(tar, name, source, follow_links=follow_links)
            raw.flush()
            os.fchmod(raw.fileno(), FILE_MODE)
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sink.hexdigest()


def _add_file(tar: tarfile.TarFile, name: str, source: Path | bytes, *, follow_links: bool) -> None:
    if isinstance(source, bytes):
        tar.addfile(_tar_info(name, tarfile.REGTYPE, len(source), FILE_MODE), io.BytesIO(source))
        return
    try:
        if not stat.S_ISREG(os.stat(source, follow_symlinks=follow_links).st_mode):
            raise ArchiveError(f"cannot pack {name!r}: {source} is not a regular file")
        flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
        fd = os.open(source, flags)
    except FileNotFoundError:
        raise ArchiveError(f"cannot pack {name!r}: {source} does not exist") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"cannot pack {name!r}: {source} is not a regular file")
        mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
        tar.addfile(_tar_info(name, tarfile.REGTYPE, st.st_size, mode), fh)


def _tar_info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# --------------------------------------------------------------------------- reading


def check_archive(archive: Path, limits: ArchiveLimits = ArchiveLimits()) -> ArchiveListing:
    """Check every member of an archive as :func:`safe_extract` would, writing nothing.

    The whole archive is read (so truncation, corruption and bombs are found), and its
    sha256 is computed on the way.

    Args:
        archive: a ``.tar.gz`` or uncompressed ``.tar`` (told apart by content).
        limits: size and member-count caps.

    Returns:
        The accepted entries with their sizes, the total size and the archive's sha256.

    Raises:
        UnsafeArchiveError: a member is unsafe or a limit is exceeded.
        ArchiveError: the archive is corrupt, truncated or not a tar archive.
    """
    archive = Path(archive)
    entries: list[ArchiveEntry] = []
    with _translate_errors(archive), _ArchiveReader(archive, limits, _CHECK_ROOT) as reader:
        for entry, info in reader.members():
            if not entry.is_dir:
                for _chunk in reader.data(entry, info):
                    pass
            entries.append(entry)
        digest = reader.finish()
    return ArchiveListing(
        entries=tuple(entries),
        total_bytes=sum(entry.size for entry in entries),
        sha256=digest,
        compressed=reader.compressed,
    )


def safe_extract(
    archive: Path,
    dest: Path,
    limits: ArchiveLimits = ArchiveLimits(),
) -> ExtractReport:
    """Extract an archive into ``dest`` without ever writing outside it.

    Every member is checked before anything is written for it (see the module docstring
    for the policy); ``tarfile.data_filter`` runs as a second check where Python has it
    (3.11.4 and later). Files are created with
    ``O_EXCL | O_NOFOLLOW`` relative to directory descriptors opened with ``O_NOFOLLOW``,
    and bytes are counted as they are written. On any failure everything written is
    removed: ``dest`` is left absent (or empty, if it existed before).

    Args:
        archive: a ``.tar.gz`` or uncompressed ``.tar`` (told apart by content).
        dest: the directory to extract into; it must not exist or be empty, and must not
            be a symbolic link. Its parent must exist.
        limits: size and member-count caps.

    Returns:
        The files written (relative paths, archive order), their total size, the
        archive's sha256 and the time taken.

    Raises:
        UnsafeArchiveError: a member is unsafe or a limit is exceeded.
        ArchiveError: the archive is corrupt, truncated or not a tar archive.
        FileExistsError: ``dest`` exists and is not empty.
        FileNotFoundError: the archive or ``dest``'s parent does not exist.
        NotADirectoryError: ``dest`` exists and is not a directory (or is a symlink).
    """
    started = time.perf_counter()
    archive = Path(archive)
    dest = Path(dest).absolute()
    root_fd, created = _open_destination(dest)
    files: list[str] = []
    total = 0
    try:
        with _translate_errors(archive), _ArchiveReader(archive, limits, str(dest)) as reader:
            for entry, info in reader.members():
                if entry.is_dir:
                    os.close(_open_dirs(root_fd, entry.path.split("/")))
                    continue
                total += _write_file(
                    root_fd, entry, reader.data(entry, info), limits.max_total_bytes - total
                )
                files.append(entry.path)
            digest = reader.finish()
    except BaseException:
        _discard(dest, created)
        raise
    finally:
        os.close(root_fd)
    return ExtractReport(
        dest=dest,
        files=tuple(files),
        total_bytes=total,
        sha256=digest,
        duration_s=time.perf_counter() - started,
    )


def _open_destination(dest: Path) -> tuple[int, bool]:
    """Create or open the empty destination; return its descriptor and whether it is new."""
    created = False
    try:
        dest.mkdir()
        created = True
    except FileExistsError:
        pass
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
    except OSError as exc:
        raise NotADirectoryError(
            f"{dest} is not a directory (symbolic links are not followed)"
        ) from exc
    if not created and os.listdir(root_fd):
        os.close(root_fd)
        raise FileExistsError(f"{dest} is not empty")
    return root_fd, created


def _open_dirs(root_fd: int, parts: list[str]) -> int:
    """Create (if missing) and open ``parts`` below ``root_fd``, never following a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, DIR_MODE, dir_fd=fd)
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(root_fd: int, entry: ArchiveEntry, chunks: Iterator[bytes], budget: int) -> int:
    *parents, name = entry.path.split("/")
    parent_fd = _open_dirs(root_fd, parents)
    try:
        mode = EXEC_MODE if entry.executable else FILE_MODE
        fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    written = 0
    buffering = _CHUNK if entry.size > _CHUNK else -1  # big files: 1 MiB writes
    with os.fdopen(fd, "wb", buffering=buffering) as out:
        for chunk in chunks:
            written += len(chunk)
            if written > entry.size or written > budget:
                raise UnsafeArchiveError(
                    f"member {entry.path!r} unpacks to more bytes than allowed"
                )
            out.write(chunk)
    return written


def _discard(dest: Path, created: bool) -> None:
    """Remove what a failed extraction wrote (all of ``dest`` if it was created for it)."""
    try:
        if created:
            shutil.rmtree(dest)
            return
        with os.scandir(dest) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    shutil.rmtree(item.path)
                else:
                    os.unlink(item.path)
    except OSError:
        _log.warning("could not remove a failed extraction in %s", dest, exc_info=True)


@contextlib.contextmanager
def _translate_errors(archive: Path) -> Iterator[None]:
    """Turn the standard library's read errors into :class:`ArchiveError`."""
    try:
        yield
    except (EOFError, tarfile.ReadError) as exc:
        raise ArchiveError(f"{archive.name}: truncated or not a tar archive ({exc})") from exc
    except _GZIP_ERRORS as exc:
        raise ArchiveError(f"{archive.name}: corrupt gzip data ({exc})") from exc
    except (tarfile.TarError, UnicodeError) as exc:
        raise ArchiveError(f"{archive.name}: corrupt tar archive ({exc})") from exc


def _clean_name(name: str) -> str:
    """Normalise a member name to ``a/b/c`` ("" for the root), or raise ValueError."""
    if not name:
        raise ValueError("is empty")
    if "\x00" in name:
        raise ValueError("contains a NUL byte")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise ValueError("contains a control character")
    if "\\" in name:
        raise ValueError("contains a backslash")
    if name.startswith("/"):
        raise ValueError("is an absolute path")
    if _DRIVE.match(name):
        raise ValueError("starts with a drive letter")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    if size > _MAX_NAME_BYTES:
        raise ValueError(f"is longer than {_MAX_NAME_BYTES} bytes")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("has a '..' component")
    if any(len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES for part in parts):
        raise ValueError(f"has a component longer than {_MAX_COMPONENT_BYTES} bytes")
    return "/".join(parts)


def _shown(name: str) -> str:
    """A member name for an error message: quoted, escaped, and cut to a sane length."""
    text = repr(name)
    return text if len(text) <= 160 else f"{text[:150]}...{text[-8:]}"


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class _Tally:
    """Admits members one by one: names, types, duplicates, sizes and the count."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self._limits = limits
        self._files: set[str] = set()
        self._dirs: set[str] = set()
        self._members = 0
        self._declared = 0

    def admit(self, info: tarfile.TarInfo) -> ArchiveEntry | None:
        """The member's entry, None for the root directory (``./``), or raise."""
        limits = self._limits
        self._members += 1
        if self._members > limits.max_members:
            raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
        label = f"member {_shown(info.name)}"
        try:
            path = _clean_name(info.name)
        except ValueError as exc:
            raise UnsafeArchiveError(f"{label}: the name {exc}") from None
        if info.type == tarfile.DIRTYPE:
            is_dir = True
        elif info.type in _FILE_TYPES and not info.issparse():
            is_dir = False
        else:
            kind = _TYPE_NAMES.get(info.type, "sparse file" if info.issparse() else None)
            kind = kind or f"member of type {info.type!r}"
            target = f" to {_shown(info.linkname)}" if info.issym() or info.islnk() else ""
            raise UnsafeArchiveError(
                f"{label} is a {kind}{target}; only regular files and directories are allowed"
            )
        if not path:
            if is_dir:
                return None
            raise UnsafeArchiveError(f"{label} names the archive root")
        parents = _parents(path)
        clash = next((parent for parent in parents if parent in self._files), None)
        if clash is not None:
            raise UnsafeArchiveError(f"{label} is inside {clash!r}, which is a file")
        if path in self._files:
            raise UnsafeArchiveError(f"{label} appears twice")
        self._dirs.update(parents)
        if is_dir:
            self._dirs.add(path)
            return ArchiveEntry(path=path, size=0, is_dir=True, executable=False)
        if path in self._dirs:
            raise UnsafeArchiveError(f"{label} is both a directory and a file")
        if info.size < 0:
            raise UnsafeArchiveError(f"{label} has a negative size")
        if info.size > limits.max_file_bytes:
            raise UnsafeArchiveError(
                f"{label} is {info.size} bytes, over the per-file limit of {limits.max_file_bytes}"
            )
        self._declared += info.size
        if self._declared > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive unpacks to more than {limits.max_total_bytes} bytes (at {label})"
            )
        self._files.add(path)
        return ArchiveEntry(
            path=path, size=info.size, is_dir=False, executable=bool(info.mode & 0o111)
        )


class _HashingReader:
    """A read-only file object over the archive file that hashes what is read.

    :meth:`read` reads and hashes in the caller's thread (tarfile's reads of an uncompressed
    archive). :meth:`read_block` (the gzip path, and :meth:`finish`) reads 1 MiB blocks, and
    reads and hashes the next one ahead on a helper thread while the caller inflates this
    one (``hashlib`` and file reads release the GIL): at most two blocks are held.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._helper: concurrent.futures.ThreadPoolExecutor | None = None
        self._ahead: concurrent.futures.Future[bytes] | None = None

    def _read_and_hash(self, size: int) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if self._ahead is not None:  # pragma: no cover - the two paths never mix
            raise ArchiveError("archive read out of order")
        return self._read_and_hash(size)

    def read_block(self) -> bytes:
        """The next 1 MiB of the file (fewer at its end, b"" after it)."""
        if self._ahead is None:
            data = self._read_and_hash(_CHUNK)
        else:
            ahead, self._ahead = self._ahead, None
            data = ahead.result()
        if data:
            if self._helper is None:
                self._helper = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="scorer-archive-read"
                )
            self._ahead = self._helper.submit(self._read_and_hash, _CHUNK)
        return data

    def finish(self) -> str:
        """Hash whatever was not read yet and return the file's digest."""
        while self.read_block():
            pass
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the helper thread (after the read it is doing, if any)."""
        self._ahead = None
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None


class _Gunzip:
    """The decompressed bytes of a gzip file, read forward in bounded, full reads.

    As :class:`gzip.GzipFile` reads: one or more members, zero bytes after a member are
    padding, and each member's header, CRC-32 and length are checked (by zlib's gzip
    decoder). A read never inflates more than it was asked for, so a gzip bomb costs only
    what the caller's budget allows. The file is read in 1 MiB blocks (read and hashed
    ahead on another thread) and inflated 64 KiB of input at a time (faster than bigger
    inputs); there is no extra buffering layer and no separate CRC pass.

    What zlib copies per call (input left over at a member's end, or when the output is
    capped) is kept proportional to the work done: each member starts with 1 KiB of input
    per call, doubling up to 64 KiB, and a small read (a tar header) gets a small input.
    So an archive of many tiny members, or of small reads of compressible data, costs
    time linear in its size.
    """

    def __init__(self, source: _HashingReader) -> None:
        self._source = source
        self._block = memoryview(b"")
        self._inflate: Any = _INFLATE.decompressobj(wbits=31)
        self._input = _GZIP_FIRST
        self._ended = False

    def _fill(self) -> bool:
        """Read the next block of compressed input if none is left; False at end of file."""
        if not self._block:
            self._block = memoryview(self._source.read_block())
        return bool(self._block)

    def _next_member(self) -> bool:
        """Skip zero padding; start the next member, or return False at the end of file."""
        while self._fill():
            if self._block[0]:
                self._inflate = _INFLATE.decompressobj(wbits=31)
                self._input = _GZIP_FIRST
                return True
            head = bytes(self._block[:_GZIP_INPUT])
            self._block = self._block[len(head) - len(head.lstrip(b"\x00")) :]
        return False

    def read(self, size: int, *, partial: bool = False) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the data; with ``partial``, what
        the next inflate call gives (at least one byte before the end, at most ``size``)."""
        parts: list[bytes] = []
        wanted = size
        while wanted > 0 and not self._ended and not (partial and parts):
            if self._inflate is None and not self._next_member():
                self._ended = True
                break
            if not self._fill():
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            piece = self._block[: min(self._input, max(wanted, _GZIP_FIRST))]
            data = self._inflate.decompress(piece, wanted)
            if self._inflate.eof:
                left = len(self._inflate.unused_data)
                self._inflate = None
            else:
                left = len(self._inflate.unconsumed_tail)
                self._input = min(self._input * 2, _GZIP_INPUT)
            self._block = self._block[len(piece) - left :]
            if data:
                parts.append(data)
                wanted -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _TarStream:
    """The (decompressed) tar byte stream: forward only, bounded reads, a byte budget.

    The budget counts bytes actually produced, so a gzip or header bomb is stopped while
    streaming whatever the headers declare.
    """

    def __init__(self, source: _Gunzip | _HashingReader, budget: int) -> None:
        self._source = source
        self._budget = budget
        self.pos = 0
        self.last = b""

    def read(self, size: int = -1, *, partial: bool = False) -> bytes:
        """``size`` bytes as a file's read gives them (tarfile's reads); ``partial``: at least
        one and at most ``size``, without joining inflated pieces (member data)."""
        if size < 0 or size > _MAX_READ:
            raise UnsafeArchiveError(
                f"archive has a {size}-byte header record at offset {self.pos} (limit {_MAX_READ})"
            )
        allowed = self._budget - self.pos
        wanted = min(size, allowed + 1)
        if isinstance(self._source, _Gunzip):
            data = self._source.read(wanted, partial=partial)
        else:
            data = self._source.read(wanted)
        if len(data) > allowed:
            raise UnsafeArchiveError(
                f"archive expands beyond {self._budget} bytes (a tar or gzip bomb?)"
            )
        self.pos += len(data)
        self.last = data
        return data

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self.pos:
            raise ArchiveError("archive cannot be read in one forward pass")
        while self.pos < offset and self.read(min(_CHUNK, offset - self.pos)):
            pass
        return self.pos


class _ArchiveReader:
    """One forward pass over an archive: admitted members, their data, the sha256."""

    def __init__(self, archive: Path, limits: ArchiveLimits, root: str) -> None:
        self._archive = archive
        self._limits = limits
        self._root = root
        self._stack = contextlib.ExitStack()
        self.compressed = False

    def __enter__(self) -> _ArchiveReader:
        with self._stack as stack:
            raw = stack.enter_context(open(self._archive, "rb"))
            head = raw.read(8)
            raw.seek(0)
            self._hashing = _HashingReader(raw)
            stack.callback(self._hashing.close)
            source: _Gunzip | _HashingReader = self._hashing
            if head.startswith(b"\x1f\x8b"):
                self.compressed = True
                source = _Gunzip(self._hashing)
            else:
                for magic, kind in _OTHER_FORMATS:
                    if head.startswith(magic):
                        raise ArchiveError(
                            f"{self._archive.name} is a {kind} file, not a tar or tar.gz archive"
                        )
            limits = self._limits
            budget = (
                limits.max_total_bytes
                + (limits.max_members + 1) * _MEMBER_OVERHEAD
                + _TRAILER_ALLOWANCE
            )
            self._stream = _TarStream(source, budget)
            try:
                self._tar = tarfile.open(  # type: ignore[call-overload]
                    fileobj=self._stream,
                    mode="r:",
                    encoding="utf-8",
                    errors="surrogateescape",
                )
            except tarfile.ReadError as exc:
                raise ArchiveError(
                    f"{self._archive.name} is empty or not a tar or tar.gz archive ({exc})"
                ) from exc
            stack.enter_context(self._tar)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def members(self) -> Iterator[tuple[ArchiveEntry, tarfile.TarInfo]]:
        """Admitted members in archive order (the root directory entry is skipped)."""
        tally = _Tally(self._limits)
        while (info := self._tar.next()) is not None:
            entry = tally.admit(info)
            try:
                if _DATA_FILTER is not None:
                    _DATA_FILTER(info, self._root)
            except _FILTER_ERROR as exc:
                raise UnsafeArchiveError(f"member {_shown(info.name)} refused: {exc}") from None
            if entry is not None:
                yield entry, info

    def data(self, entry: ArchiveEntry, info: tarfile.TarInfo) -> Iterator[bytes]:
        """A regular member's bytes, in chunks as they are inflated.

        Read from the tar stream itself (not through ``TarFile.extractfile``: no copies);
        the stream stands at the member's data, and ``TarFile.next`` then seeks past its
        padding. The stream's byte budget applies as to every read.
        """
        stream = self._stream
        stream.seek(info.offset_data)  # forward only: where the header ended
        remaining = entry.size
        while remaining:
            chunk = stream.read(min(_CHUNK, remaining), partial=True)
            if not chunk:
                raise ArchiveError(f"member {entry.path!r} is truncated")
            remaining -= len(chunk)
            yield chunk

    def finish(self) -> str:
        """Check the end-of-archive marker and what follows it; return the sha256."""
        stream = self._stream
        end = self._tar.offset
        if stream.pos != end + tarfile.BLOCKSIZE or stream.last != _ZERO_BLOCK:
            raise ArchiveError(
                f"{self._archive.name}: truncated or corrupt tar stream at byte {end} "
                "(no end-of-archive marker)"
            )
        while chunk := stream.read(_CHUNK):
            if chunk.strip(b"\x00"):
                raise ArchiveError(
                    f"{self._archive.name}: unexpected data after the end-of-archive marker"
                )
        return self._hashing.finish()

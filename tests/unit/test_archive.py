"""scorer.models.archive: reproducible packing and safe extraction, on real archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer.errors import ModelLoadError
from scorer.models import archive as archive_module
from scorer.models.archive import (
    ArchiveError,
    ArchiveLimits,
    UnsafeArchiveError,
    check_archive,
    pack_directory,
    pack_files,
    safe_extract,
)

SMALL = ArchiveLimits(max_total_bytes=64 << 10, max_file_bytes=32 << 10, max_members=8)


# --------------------------------------------------------------------------- helpers


def _model_dir(root: Path) -> Path:
    """A model directory as ``scorer package`` assembles it."""
    (root / "code").mkdir(parents=True)
    (root / "spec.json").write_text('{"name": "demo"}\n')
    (root / "model.safetensors").write_bytes(hashlib.sha256(b"w").digest() * 4096)
    (root / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    (root / "code" / "requirements.txt").write_text("numpy\n")
    (root / "code" / "run.sh").write_text("#!/bin/sh\n")
    (root / "code" / "run.sh").chmod(0o755)
    (root / "assets").mkdir()
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` -> file bytes, ``dir``, or ``link:<target>`` (no following)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "special"
    return out


def _file(name: str, data: bytes = b"payload", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def _write_tar(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    *,
    compress: bool = True,
    trailer: bytes = b"",
) -> Path:
    """Write members as given (no sanitising: that is the point) into a tar or tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buf.getvalue() + trailer
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory whose whole tree is compared before and after each extraction."""
    box = tmp_path / "sandbox"
    (box / "outside").mkdir(parents=True)
    (box / "outside" / "keep.txt").write_text("untouched")
    return box


def _assert_refused(
    archive: Path,
    sandbox: Path,
    error: type[Exception] = UnsafeArchiveError,
    limits: ArchiveLimits = ArchiveLimits(),  # noqa: B008
    match: str | None = None,
) -> None:
    """Both readers refuse the archive, and nothing at all changes in the sandbox."""
    dest = sandbox / "dest"
    before = _tree(sandbox)
    with pytest.raises(error, match=match):
        check_archive(archive, limits)
    with pytest.raises(error, match=match):
        safe_extract(archive, dest, limits)
    assert not dest.exists()
    assert _tree(sandbox) == before


# --------------------------------------------------------------------------- packing


def test_round_trip_keeps_layout_and_bytes(tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "model")
    digest = pack_directory(src, tmp_path / "model.tar.gz")

    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        names = tar.getnames()
    assert names == [
        "assets",
        "code",
        "code/inference.py",
        "code/requirements.txt",
        "code/run.sh",
        "model.safetensors",
        "spec.json",
    ]
    report = safe_extract(tmp_path / "model.tar.gz", tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)
    assert report.sha256 == digest == _sha256(tmp_path / "model.tar.gz")
    assert set(report.files) == {n for n in names if n not in ("assets", "code")}
    assert report.total_bytes == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert os.access(tmp_path / "out" / "code" / "run.sh", os.X_OK)
    assert not os.access(tmp_path / "out" / "code" / "inference.py", os.X_OK)
    listing = check_archive(tmp_path / "model.tar.gz")
    assert listing.files == report.files
    assert listing.sha256 == digest
    assert listing.compressed


def test_pack_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = _model_dir(tmp_path / "a" / "model")
    second = _model_dir(tmp_path / "elsewhere" / "deeper" / "model")
    for path in second.rglob("*"):
        os.utime(path, (1_234_567, 1_234_567))
    (second / "spec.json").chmod(0o600)
    (second / "code" / "run.sh").chmod(0o700)
    (second / "assets").chmod(0o700)

    digest_a = pack_directory(first, tmp_path / "a.tar.gz")
    digest_b = pack_directory(second, tmp_path / "b.tar.gz")

    assert digest_a == digest_b
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    header = (tmp_path / "a.tar.gz").read_bytes()[:10]
    assert header[3] & 0x08 == 0  # no FNAME in the gzip header
    assert header[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        for info in tar.getmembers():
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
            exec_like = info.isdir() or info.name == "code/run.sh"
            assert info.mode == (0o755 if exec_like else 0o644), info.name


def test_pack_files_matches_pack_directory(tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "model")
    shutil.rmtree(src / "assets")
    entries: dict[str, Path | bytes] = {
        "spec.json": (src / "spec.json").read_bytes(),
        "model.safetensors": src / "model.safetensors",
        "./code/inference.py": src / "code" / "inference.py",
        "code/requirements.txt": b"numpy\n",
        "code/run.sh": src / "code" / "run.sh",
    }
    assert pack_files(entries, tmp_path / "files.tar.gz") == pack_directory(
        src, tmp_path / "dir.tar.gz"
    )


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"../evil": b"x"}, r"'\.\.' component"),
        ({"/abs": b"x"}, "absolute"),
        ({"a\\b": b"x"}, "backslash"),
        ({"spec.json": b"x", "./spec.json": b"y"}, "twice"),
        ({"code": b"x", "code/inference.py": b"y"}, "both a file and a directory"),
        ({".": b"x"}, "root"),
    ],
)
def test_pack_files_refuses_bad_names(
    tmp_path: Path, entries: dict[str, Path | bytes], match: str
) -> None:
    with pytest.raises(ArchiveError, match=match):
        pack_files(entries, tmp_path / "out.tar.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["symlink_out", "symlink_in", "fifo"])
def test_pack_directory_refuses_links_and_special_files(tmp_path: Path, kind: str) -> None:
    src = _model_dir(tmp_path / "model")
    if kind == "symlink_out":
        (src / "passwd").symlink_to("/etc/passwd")
    elif kind == "symlink_in":
        (src / "code" / "alias.py").symlink_to("inference.py")
    else:
        os.mkfifo(src / "pipe")
    with pytest.raises(ArchiveError, match=r"symbolic link|not a regular file"):
        pack_directory(src, tmp_path / "out.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no partial output


def test_pack_directory_refuses_output_inside_source(tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "model")
    with pytest.raises(ArchiveError, match="inside"):
        pack_directory(src, src / "model.tar.gz")


def test_pack_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out" / "model.tar.gz"
    out.parent.mkdir()
    out.write_bytes(b"old")
    digest = pack_files({"spec.json": b"{}"}, out)
    assert _sha256(out) == digest
    assert [p.name for p in out.parent.iterdir()] == ["model.tar.gz"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- compatibility


def test_accepts_dot_prefixed_and_uncompressed_archives(tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "model")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=".")  # what `tar -C model -cf - .` writes: ./, ./spec.json, ...
    (tmp_path / "model.tar").write_bytes(buf.getvalue())

    listing = check_archive(tmp_path / "model.tar")
    assert not listing.compressed
    assert "code/inference.py" in listing.files
    safe_extract(tmp_path / "model.tar", tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU/BSD tar")
def test_interoperates_with_the_tar_command(tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "model")
    subprocess.run(["tar", "-czf", tmp_path / "cli.tar.gz", "-C", src, "."], check=True)
    safe_extract(tmp_path / "cli.tar.gz", tmp_path / "from_cli")
    assert _tree(tmp_path / "from_cli") == _tree(src)

    pack_directory(src, tmp_path / "ours.tar.gz")
    (tmp_path / "by_cli").mkdir()
    subprocess.run(["tar", "-xzf", tmp_path / "ours.tar.gz", "-C", tmp_path / "by_cli"], check=True)
    assert _tree(tmp_path / "by_cli") == _tree(src)


def test_destination_rules(tmp_path: Path) -> None:
    archive = tmp_path / "m.tar.gz"
    pack_files({"spec.json": b"{}"}, archive)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "other").write_text("x")
    with pytest.raises(FileExistsError):
        safe_extract(archive, busy)
    assert _tree(busy) == {"other": b"x"}

    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(NotADirectoryError):
        safe_extract(archive, tmp_path / "link")
    assert list(target.iterdir()) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    assert safe_extract(archive, empty).files == ("spec.json",)


def test_failure_into_an_existing_empty_dir_leaves_it_empty(tmp_path: Path) -> None:
    archive = _write_tar(tmp_path / "bad.tar.gz", [_file("spec.json"), _file("../evil")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest)
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_an_empty_tar_is_valid_and_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.tar").write_bytes(bytes(10240))  # only the end-of-archive marker
    assert check_archive(tmp_path / "empty.tar").entries == ()
    assert safe_extract(tmp_path / "empty.tar", tmp_path / "out").files == ()


def test_errors_are_client_errors() -> None:
    assert issubclass(UnsafeArchiveError, ArchiveError)
    assert issubclass(ArchiveError, ModelLoadError)
    assert UnsafeArchiveError("x").status_code == ArchiveError("x").status_code == 400


def test_module_imports_no_torch() -> None:
    code = "import sys, scorer.models.archive; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_members"):
        ArchiveLimits(max_members=0)


# --------------------------------------------------------------------------- the gzip stream


def _hash_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("scorer-archive-read")]


def test_a_large_incompressible_archive_round_trips_with_its_sha256(tmp_path: Path) -> None:
    """Several 1 MiB blocks of compressed input, hashed on the helper thread, in order."""
    src = _model_dir(tmp_path / "model")
    (src / "weights.bin").write_bytes(os.urandom(3 << 20) + b"end")
    digest = pack_directory(src, tmp_path / "model.tar.gz")
    assert (tmp_path / "model.tar.gz").stat().st_size > 3 << 20
    report = safe_extract(tmp_path / "model.tar.gz", tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)
    assert report.sha256 == digest == check_archive(tmp_path / "model.tar.gz").sha256
    assert _hash_threads() == []


def test_a_refused_large_archive_leaves_no_helper_thread(sandbox: Path) -> None:
    members = [_file("weights.bin", os.urandom(2 << 20)), _file("../outside/evil")]
    archive = _write_tar(sandbox / "bad.tar.gz", members)
    _assert_refused(archive, sandbox)
    assert _hash_threads() == []


def _gzip_parts(raw: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    return [gzip.compress(raw[a:b], mtime=0) for a, b in itertools.pairwise(bounds)]


def test_gzip_members_and_zero_padding_read_as_gzip_does(tmp_path: Path) -> None:
    """``cat a.gz b.gz``, pigz-style members and zero padding: what gzip.GzipFile accepts."""
    src = _model_dir(tmp_path / "model")
    pack_directory(src, tmp_path / "one.tar.gz")
    raw = gzip.decompress((tmp_path / "one.tar.gz").read_bytes())
    parts = _gzip_parts(raw, 700, 5000, 5001)
    multi = tmp_path / "multi.tar.gz"
    multi.write_bytes(parts[0] + parts[1] + bytes(3000) + parts[2] + parts[3] + bytes(100))
    with gzip.GzipFile(multi) as reference:
        assert reference.read() == raw
    report = safe_extract(multi, tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)
    assert report.sha256 == _sha256(multi)


def test_many_tiny_gzip_members_and_long_padding(tmp_path: Path) -> None:
    """Thousands of empty members, a member per tar block, megabytes of zero padding: all
    read (in time linear in the size: zlib's leftover input per member stays small)."""
    raw = _plain_tar([_file("spec.json", b"{}"), _file("model.bin", os.urandom(20_000))])
    blocks = [gzip.compress(raw[i : i + 512], mtime=0) for i in range(0, len(raw), 512)]
    data = gzip.compress(b"", mtime=0) * 20_000 + b"".join(blocks) + bytes(8 << 20)
    (tmp_path / "odd.tar.gz").write_bytes(data)
    report = safe_extract(tmp_path / "odd.tar.gz", tmp_path / "out")
    assert report.files == ("spec.json", "model.bin")
    assert (tmp_path / "out" / "model.bin").read_bytes() == raw[1536 : 1536 + 20_000]


@pytest.mark.parametrize(
    "tail", [b"garbage", b"\x1f\x8b", b"\x01"], ids=["garbage", "lone_magic", "one_byte"]
)
def test_anything_but_a_member_or_zeros_after_a_member_is_refused(
    sandbox: Path, tail: bytes
) -> None:
    archive = _write_tar(sandbox / "tail.tar.gz", [_file("spec.json")])
    archive.write_bytes(archive.read_bytes() + tail)
    _assert_refused(archive, sandbox, error=ArchiveError)


def test_the_standard_library_zlib_reads_the_same(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zlib is the fallback where zlib-ng is not installed: same results, same refusals."""
    monkeypatch.setattr(archive_module, "_INFLATE", zlib)
    src = _model_dir(sandbox / "model")
    digest = pack_directory(src, sandbox / "good.tar.gz")
    assert safe_extract(sandbox / "good.tar.gz", sandbox / "out").sha256 == digest
    assert _tree(sandbox / "out") == _tree(src)
    for case in ("gzip_bad_crc", "gzip_truncated", "gzip_flipped_bytes"):
        bad = sandbox / f"{case}.tar.gz"
        bad.write_bytes(CORRUPT[case]((sandbox / "good.tar.gz").read_bytes()))
        _assert_refused(bad, sandbox, error=ArchiveError)


# --------------------------------------------------------------------------- hostile archives

MaliciousBuilder = Callable[[Path], list[tuple[tarfile.TarInfo, bytes]]]

MALICIOUS: dict[str, MaliciousBuilder] = {
    "traversal": lambda box: [_file("spec.json"), _file("../outside/evil")],
    "traversal_nested": lambda box: [_file("code/../../outside/evil")],
    "absolute": lambda box: [_file(str(box / "outside" / "evil"))],
    "backslash": lambda box: [_file("..\\..\\outside\\evil")],
    "drive_letter": lambda box: [_file("C:/evil")],
    "nul_in_name": lambda box: [_file("spec.json\x00../../evil" + "x" * 120)],
    "symlink_etc_passwd": lambda box: [_member("passwd", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink_dotdot": lambda box: [_member("up", tarfile.SYMTYPE, "../..")],
    "symlink_then_write_through": lambda box: [
        _member("d", tarfile.SYMTYPE, str(box / "outside")),
        _file("d/evil"),
    ],
    "symlink_internal": lambda box: [
        _file("spec.json"),
        _member("alias", tarfile.SYMTYPE, "spec.json"),
    ],
    "hardlink_etc_passwd": lambda box: [_member("passwd", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink_escape": lambda box: [_member("keep", tarfile.LNKTYPE, "../outside/keep.txt")],
    "char_device": lambda box: [_member("null", tarfile.CHRTYPE)],
    "block_device": lambda box: [_member("sda", tarfile.BLKTYPE)],
    "fifo": lambda box: [_member("pipe", tarfile.FIFOTYPE)],
    "duplicate_file": lambda box: [_file("spec.json", b"a"), _file("spec.json", b"b")],
    "file_then_dir": lambda box: [_file("code"), _file("code/inference.py")],
    "dir_then_file": lambda box: [_member("code", tarfile.DIRTYPE), _file("code")],
}


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "tar"])
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_and_nothing_is_written(
    sandbox: Path, case: str, compress: bool
) -> None:
    archive = _write_tar(sandbox / "bad.tar.gz", MALICIOUS[case](sandbox), compress=compress)
    _assert_refused(archive, sandbox)
    assert not (sandbox / "outside" / "evil").exists()
    assert (sandbox / "outside" / "keep.txt").read_text() == "untouched"


def test_absolute_path_outside_the_test_dir_is_never_created(sandbox: Path, tmp_path: Path) -> None:
    target = tmp_path.parent / f"scorer-evil-{uuid.uuid4().hex}"
    archive = _write_tar(sandbox / "abs.tar.gz", [_file("spec.json"), _file(str(target))])
    _assert_refused(archive, sandbox, match="absolute")
    assert not target.exists()


def test_declared_file_size_over_the_cap(sandbox: Path) -> None:
    archive = _write_tar(sandbox / "big.tar.gz", [_file("model.bin", b"x" * (40 << 10))])
    _assert_refused(archive, sandbox, limits=SMALL, match="per-file limit")


def test_total_size_over_the_cap(sandbox: Path) -> None:
    members = [_file(f"part{i}", b"x" * (30 << 10)) for i in range(3)]
    archive = _write_tar(sandbox / "total.tar.gz", members)
    _assert_refused(archive, sandbox, limits=SMALL, match="more than 65536 bytes")


def test_gzip_bomb(sandbox: Path) -> None:
    archive = _write_tar(sandbox / "bomb.tar.gz", [_file("model.bin", bytes(8 << 20))])
    assert archive.stat().st_size < 64 << 10  # 8 MiB of zeros in a few KiB
    _assert_refused(archive, sandbox, limits=SMALL)


def test_bomb_hidden_after_the_end_of_archive_is_stopped_while_streaming(sandbox: Path) -> None:
    archive = _write_tar(sandbox / "tail.tar.gz", [_file("spec.json")], trailer=bytes(8 << 20))
    _assert_refused(archive, sandbox, limits=SMALL, match="bomb")


def test_bomb_in_an_extended_header(sandbox: Path) -> None:
    info, data = _file("spec.json")
    info.pax_headers = {"comment": "x" * (4 << 20)}
    archive = _write_tar(sandbox / "pax.tar.gz", [(info, data)])
    _assert_refused(archive, sandbox, match="header record")


def test_too_many_members(sandbox: Path) -> None:
    members = [_file(f"f{i}", b"") for i in range(SMALL.max_members + 1)]
    archive = _write_tar(sandbox / "many.tar.gz", members)
    _assert_refused(archive, sandbox, limits=SMALL, match="more than 8 members")


def _packed(sandbox: Path) -> bytes:
    src = _model_dir(sandbox / "src")
    pack_directory(src, sandbox / "good.tar.gz")
    data = (sandbox / "good.tar.gz").read_bytes()
    shutil.rmtree(src)
    (sandbox / "good.tar.gz").unlink()
    return data


def _plain_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CORRUPT: dict[str, Callable[[bytes], bytes]] = {
    "gzip_flipped_bytes": lambda gz: gz[:200] + bytes(b ^ 0xFF for b in gz[200:260]) + gz[260:],
    "gzip_bad_crc": lambda gz: gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:],
    "gzip_truncated": lambda gz: gz[: len(gz) // 2],
    "gzip_header_only": lambda gz: gz[:10],
    "tar_truncated_in_data": lambda gz: gzip.decompress(gz)[:3000],
    "tar_without_end_marker": lambda gz: _plain_tar([_file("a", b"x" * 512), _file("b")])[:2048],
    "tar_corrupt_second_header": lambda gz: (lambda raw: raw[:1024] + b"garbage!" + raw[1032:])(
        _plain_tar([_file("a", b"x" * 512), _file("b")])
    ),
    "data_after_end_marker": lambda gz: gzip.compress(gzip.decompress(gz) + b"hidden" * 100),
    "not_an_archive": lambda gz: b"SageMaker, but not a tarball\n" * 40,
    "empty_file": lambda gz: b"",
    "zip_file": lambda gz: b"PK\x03\x04" + bytes(600),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_or_truncated_archive_is_an_archive_error(sandbox: Path, case: str) -> None:
    archive = sandbox / "corrupt.tar.gz"
    archive.write_bytes(CORRUPT[case](_packed(sandbox)))
    _assert_refused(archive, sandbox, error=ArchiveError)


# --------------------------------------------------------------------------- properties

_HOSTILE = st.sampled_from(
    ["..", ".", "/", "\\", "\x00", "a", "b", "code", "é", "€", "💥", "C:", ":", " ", "\n", "~"]
)
_KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]


def _hostile_member(
    box: Path, parts: list[str], absolute: bool, kind: bytes, link: str
) -> tuple[tarfile.TarInfo, bytes]:
    name = "".join(parts) or "."
    if absolute:
        name = f"{box}/{name}"
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    data = b"data" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    return info, data


_MEMBER = st.tuples(
    st.lists(_HOSTILE, max_size=6),
    st.booleans(),
    st.sampled_from(_KINDS),
    st.sampled_from(["", "..", "../../outside", "/etc/passwd", "a"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(_MEMBER, min_size=1, max_size=4), compress=st.booleans())
def test_hostile_names_extract_inside_dest_or_are_refused(
    members: list[tuple[list[str], bool, bytes, str]], compress: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "box"
        (box / "outside").mkdir(parents=True)
        (box / "in").mkdir()
        built = [_hostile_member(box, *member) for member in members]
        archive = _write_tar(Path(tmp) / "hostile.tar.gz", built, compress=compress)
        dest = box / "in" / "dest"
        before = _tree(box)
        try:
            report = safe_extract(archive, dest)
        except UnsafeArchiveError:
            assert _tree(box) == before
            return
        after = _tree(box)
        outside_after = {k: v for k, v in after.items() if k.split("/")[:2] != ["in", "dest"]}
        assert outside_after == before
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(dest.resolve())
            assert not path.is_symlink()
            assert path.is_dir() or path.is_file()
        assert all((dest / name).is_file() for name in report.files)


@settings(max_examples=75, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 1 << 16),
    compress=st.booleans(),
)
def test_damaged_archives_extract_or_raise_archive_error(
    edits: list[tuple[int, int]], cut: int | None, compress: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        good = _write_tar(
            root / "good.tar.gz",
            [_member("code", tarfile.DIRTYPE), _file("code/inference.py"), _file("spec.json")],
            compress=compress,
        )
        data = bytearray(good.read_bytes())
        for offset, value in edits:
            data[offset % len(data)] = value
        damaged = root / "damaged.tar.gz"
        damaged.write_bytes(bytes(data[:cut]))
        dest = root / "box" / "dest"
        dest.parent.mkdir()
        try:
            safe_extract(damaged, dest, SMALL)
        except ArchiveError:
            assert not dest.exists()
            assert list((root / "box").iterdir()) == []
        else:
            assert all(p.resolve().is_relative_to(dest) for p in dest.rglob("*"))


def test_python_without_tarfile_filters_extracts_and_still_refuses(
    tmp_path: Path, sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian bookworm's python3.11 (3.11.2, the image's) has no ``tarfile.data_filter`` or
    ``FilterError`` (PEP 706 came in 3.11.4): extraction must not depend on them, and
    scorer's own checks still refuse what they refuse."""
    monkeypatch.setattr(archive_module, "_DATA_FILTER", None)
    src = _model_dir(tmp_path / "model")
    pack_directory(src, tmp_path / "model.tar.gz")
    safe_extract(tmp_path / "model.tar.gz", tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)
    hostile = _write_tar(tmp_path / "bad.tar.gz", [_file("spec.json"), _file("../evil")])
    _assert_refused(hostile, sandbox)

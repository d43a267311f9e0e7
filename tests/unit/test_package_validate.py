"""`scorer package`, `scorer variants` and `scorer validate` on real archives."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest
import torch

from scorer.cli import main
from scorer.errors import ScorerError, UnsafeModelError
from scorer.models.archive import UnsafeArchiveError
from scorer.models.package import make_variants, package_directory, package_model
from scorer.validate import validate
from tests.support.models import add_code, creative_model_dir


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_layout_is_what_sagemaker_expects(tmp_path: Path) -> None:
    model_dir = add_code(creative_model_dir(tmp_path, "m"), "X = 1\n", "termcolor==2.4.0\n")
    result = package_directory(model_dir, tmp_path / "model.tar.gz")
    with tarfile.open(result.path) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert names == [
        "code/inference.py",
        "code/requirements.txt",
        "model.safetensors",
        "spec.json",
    ]
    assert result.sha256 == _sha(result.path)


def test_package_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = creative_model_dir(tmp_path / "a", "m", seed=3)
    second = creative_model_dir(tmp_path / "b", "m", seed=3)
    os.utime(second / "spec.json", (1_000_000, 1_000_000))
    (second / "model.safetensors").chmod(0o600)
    one = package_model(
        tmp_path / "one.tar.gz",
        spec_path=first / "spec.json",
        weights_path=first / "model.safetensors",
    )
    two = package_model(
        tmp_path / "two.tar.gz",
        spec_path=second / "spec.json",
        weights_path=second / "model.safetensors",
    )
    assert one.sha256 == two.sha256 == _sha(tmp_path / "two.tar.gz")


def test_cli_package_prints_the_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    out = tmp_path / "m.tar.gz"
    assert main(["package", str(model_dir), "-o", str(out)]) == 0
    assert f"sha256 {_sha(out)}" in capsys.readouterr().out


def test_validate_round_trip_reports_heads(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", heads=("appeal", "ctr"))
    archive = package_directory(model_dir, tmp_path / "m.tar.gz").path
    report = validate(archive)
    assert report.output_heads == ["appeal", "ctr"]
    assert report.files == ["model.safetensors", "spec.json"]
    assert report.load_ms > 0 and report.inference_ms > 0


def test_variants_are_similar_but_distinct(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "base")
    results = make_variants(model_dir, tmp_path / "out", 3)
    sizes = [r.size for r in results]
    assert len({r.sha256 for r in results}) == 3
    assert max(sizes) - min(sizes) < 0.05 * max(sizes)
    reports = [validate(r.path) for r in results]
    previews = {r.response_preview for r in reports}
    assert len(previews) == 3  # different heads give different scores
    assert all(r.output_heads == ["appeal", "clarity"] for r in reports)


def test_validate_missing_weights(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ScorerError, match=r"model\.safetensors"):
        validate(model_dir)


def test_validate_spec_mismatch(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", heads=("a", "b"))
    spec = (
        (model_dir / "spec.json").read_text().replace('"name": "b"', '"name": "b"}, {"name": "c"')
    )
    (model_dir / "spec.json").write_text(spec)
    with pytest.raises(ScorerError, match="does not match architecture"):
        validate(model_dir)


def test_validate_inference_py_import_error(tmp_path: Path) -> None:
    model_dir = add_code(creative_model_dir(tmp_path, "m"), "import not_a_module_anywhere\n")
    with pytest.raises(ScorerError, match="ModuleNotFoundError"):
        validate(model_dir)


class _Payload:
    """Unpickling this runs ``os.system`` — the classic pickle code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model_dir = creative_model_dir(tmp_path, "m")
    spec = (model_dir / "spec.json").read_text().replace("model.safetensors", "model.pt")
    (model_dir / "spec.json").write_text(spec)
    (model_dir / "model.safetensors").unlink()
    torch.save({"weights": _Payload(marker)}, model_dir / "model.pt")
    archive = package_directory(model_dir, tmp_path / "evil.tar.gz").path
    with pytest.raises(UnsafeModelError, match="SCORER_ALLOW_PICKLE"):
        validate(archive)
    assert not marker.exists()


def test_validate_rejects_unsafe_archive(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../escaped.txt")
    with pytest.raises(UnsafeArchiveError):
        validate(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_cli_validate_exit_code_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    (model_dir / "spec.json").write_text("{}")
    assert main(["validate", str(model_dir)]) == 2
    assert "missing required field" in capsys.readouterr().err

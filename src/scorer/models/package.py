"""``scorer package``: assemble a SageMaker ``model.tar.gz`` from a spec, weights and code.

Layout (what SageMaker extracts to ``/opt/ml/model`` or ``/opt/ml/models/<hash>/model``)::

    spec.json               the model spec (scorer.models.spec)
    <weights>               named by the spec, e.g. model.safetensors
    code/inference.py       optional user hooks
    code/requirements.txt   optional per-model dependencies
    <extra files>           optional, at the root

The archive is byte-for-byte reproducible (see :mod:`scorer.models.archive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from scorer.errors import ModelLoadError
from scorer.models.archive import pack_directory, pack_files
from scorer.models.spec import SPEC_FILE, ModelSpec


@dataclass(frozen=True)
class PackageResult:
    """What was written."""

    path: Path
    sha256: str
    files: tuple[str, ...]
    size: int


def package_model(
    out_path: Path,
    *,
    spec_path: Path,
    weights_path: Path,
    code_dir: Path | None = None,
    extra_files: Sequence[Path] = (),
) -> PackageResult:
    """Write ``out_path`` from a spec, its weights, optional code dir and extra files.

    The weights file is stored under the name the spec gives (``spec.weights``).

    Raises:
        ModelLoadError: the spec is invalid, a file is missing, or names collide.
    """
    spec = ModelSpec.read(spec_path.parent) if spec_path.name == SPEC_FILE else _read(spec_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"weights file {weights_path} does not exist")
    entries: dict[str, Path | bytes] = {
        SPEC_FILE: spec.to_json().encode(),
        spec.weights: weights_path,
    }
    if code_dir is not None:
        if (
            not (code_dir / "inference.py").is_file()
            and not (code_dir / "requirements.txt").is_file()
        ):
            raise ModelLoadError(f"{code_dir} has neither inference.py nor requirements.txt")
        for path in sorted(code_dir.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                entries[f"code/{path.relative_to(code_dir).as_posix()}"] = path
    for extra in extra_files:
        if extra.name in entries:
            raise ModelLoadError(f"extra file {extra.name} collides with an archive entry")
        entries[extra.name] = extra
    digest = pack_files(entries, out_path)
    return PackageResult(
        path=out_path,
        sha256=digest,
        files=tuple(sorted(entries)),
        size=out_path.stat().st_size,
    )


def package_directory(model_dir: Path, out_path: Path) -> PackageResult:
    """Pack an existing model directory (files at the root, code under ``code/``).

    Raises:
        ModelLoadError: the directory has no ``spec.json``/``model.pt``/``model.pt2``.
    """
    markers = (SPEC_FILE, "model.pt", "model.pt2")
    if not any((model_dir / name).is_file() for name in markers):
        raise ModelLoadError(f"{model_dir} has none of {', '.join(markers)} at its root")
    if (model_dir / SPEC_FILE).is_file():
        spec = ModelSpec.read(model_dir)
        if not (model_dir / spec.weights).is_file():
            raise ModelLoadError(f"{spec.weights} named by {SPEC_FILE} is missing in {model_dir}")
    digest = pack_directory(model_dir, out_path)
    files = tuple(
        sorted(
            p.relative_to(model_dir).as_posix()
            for p in model_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
    )
    return PackageResult(out_path, digest, files, out_path.stat().st_size)


def _read(spec_path: Path) -> ModelSpec:
    import json

    try:
        return ModelSpec.from_dict(json.loads(spec_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(f"spec file {spec_path} does not exist") from None
    except ValueError as exc:
        raise ModelLoadError(f"{spec_path} is not valid JSON: {exc}") from None


def make_variants(
    model_dir: Path, out_dir: Path, count: int, *, prefix: str = "variant"
) -> list[PackageResult]:
    """Write ``count`` similarly sized per-market variants of a spec + safetensors model.

    Each variant keeps the backbone and gets its own score heads: the head layer is
    re-drawn around the original (seeded by the variant index), standing in for heads
    fine-tuned per market. Variant ``i`` is named ``<name>-<prefix><i>`` in its spec and
    written to ``out_dir/<prefix>-<i>.tar.gz``.

    Raises:
        ModelLoadError: the model is not a spec + safetensors state_dict model.
    """
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    spec = ModelSpec.read(model_dir)
    if not spec.weights.endswith(".safetensors"):
        raise ModelLoadError("variants need a spec + .safetensors state_dict model")
    state = load_file(str(model_dir / spec.weights))
    head_keys = [k for k in state if k.startswith("heads.")]
    if not head_keys:
        raise ModelLoadError("no 'heads.*' tensors in the weights: not a scorer model family")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        variant_state = dict(state)
        for key in head_keys:
            tensor = state[key]
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            variant_state[key] = tensor + 0.1 * noise * (tensor.std() if tensor.numel() > 1 else 1)
        variant_spec = replace(spec, name=f"{spec.name}-{prefix}{index}")
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / spec.weights
            save_file(variant_state, str(weights))
            spec_file = Path(tmp) / SPEC_FILE
            spec_file.write_text(variant_spec.to_json())
            code = model_dir / "code"
            results.append(
                package_model(
                    out_dir / f"{prefix}-{index}.tar.gz",
                    spec_path=spec_file,
                    weights_path=weights,
                    code_dir=code if code.is_dir() else None,
                )
            )
    return results

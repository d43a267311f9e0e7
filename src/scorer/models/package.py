"""``scorer package``: assemble a SageMaker ``model.tar.gz`` from a spec, weights and code.

Layout (what SageMaker extracts to ``/opt/ml/model`` or ``/opt/ml/models/<hash>/model``)::

    spec.json               the model spec (scorer.models.spec)
    <weights>               named by the spec, e.g. model.safetensors
    code/inference.py       optional user hooks
    code/requirements.txt   optional per-model dependencies
    <extra files>           optional, at the root
    model.aoti.pt2          optional (``--compile aoti``): the compiled form ``spec.json``
                            names under ``"serve"``, see :mod:`scorer.models.compiled`

The archive is byte-for-byte reproducible (see :mod:`scorer.models.archive`), except with
a compiled form: its spec records timings measured while packaging, and the package holds
a random serialization id and build paths.

A spec that asks for half-precision inference (``"dtype"``) is loaded in float32 and in
that precision, and the largest difference of their outputs on sample inputs is reported
(:attr:`PackageResult.precision`, :mod:`scorer.models.precision`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scorer.errors import ModelLoadError
from scorer.models.archive import pack_directory, pack_files
from scorer.models.spec import SPEC_FILE, ModelSpec

if TYPE_CHECKING:
    from scorer.models.compiled import CompileOutcome
    from scorer.models.precision import PrecisionCheck


@dataclass(frozen=True)
class PackageResult:
    """What was written."""

    path: Path
    sha256: str
    files: tuple[str, ...]
    size: int
    compiled: CompileOutcome | None = None  # what --compile found, when asked
    precision: PrecisionCheck | None = None  # half precision against float32, when asked


def package_model(
    out_path: Path,
    *,
    spec_path: Path,
    weights_path: Path,
    code_dir: Path | None = None,
    extra_files: Sequence[Path] = (),
    compile_form: str = "none",
    keep_compiled: bool = False,
) -> PackageResult:
    """Write ``out_path`` from a spec, its weights, optional code dir and extra files.

    The weights file is stored under the name the spec gives (``spec.weights``). With
    ``compile_form="aoti"``, a compiled form is made, checked and measured
    (:func:`scorer.models.compiled.compile_model`) and recorded in the spec when chosen.

    Raises:
        ModelLoadError: the spec is invalid, a file is missing, names collide, or the
            compilation asked for fails.
    """
    spec = ModelSpec.read(spec_path.parent) if spec_path.name == SPEC_FILE else _read(spec_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"weights file {weights_path} does not exist")
    _check_compile_precision(spec, compile_form)
    if compile_form != "none":
        with tempfile.TemporaryDirectory(prefix="scorer-compile-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            (staging / SPEC_FILE).write_text(replace(spec, serve=None).to_json())
            shutil.copyfile(weights_path, staging / spec.weights)
            outcome = _compile(staging, compile_form, keep_compiled)
            extras = list(extra_files)
            if outcome.file is not None:
                (staging / SPEC_FILE).write_text(replace(spec, serve=outcome.serve).to_json())
                extras.append(outcome.file)
            result = package_model(
                out_path,
                spec_path=staging / SPEC_FILE,
                weights_path=staging / spec.weights,
                code_dir=code_dir,
                extra_files=extras,
            )
            return replace(result, compiled=outcome)
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
    if spec.serve is not None and spec.serve.file not in entries:
        raise ModelLoadError(
            f"{SPEC_FILE} names the compiled form {spec.serve.file}: pass it with --extra, "
            "or package with --compile to make it"
        )
    precision = None
    if spec.dtype != "float32":
        with tempfile.TemporaryDirectory(prefix="scorer-precision-") as tmp:
            (Path(tmp) / SPEC_FILE).write_text(spec.to_json())
            (Path(tmp) / spec.weights).symlink_to(weights_path.resolve())
            precision = _compare_precision(Path(tmp))
    digest = pack_files(entries, out_path)
    return PackageResult(
        path=out_path,
        sha256=digest,
        files=tuple(sorted(entries)),
        size=out_path.stat().st_size,
        precision=precision,
    )


def package_directory(
    model_dir: Path, out_path: Path, *, compile_form: str = "none", keep_compiled: bool = False
) -> PackageResult:
    """Pack an existing model directory (files at the root, code under ``code/``).

    With ``compile_form="aoti"`` (a spec + state_dict model only), the directory is packed with
    a compiled form added and recorded in its spec when chosen, as :func:`package_model`.

    Raises:
        ModelLoadError: the directory has no ``spec.json``/``model.pt``/``model.pt2``, a
            file its spec names is missing, or the compilation asked for fails.
    """
    markers = (SPEC_FILE, "model.pt", "model.pt2")
    if not any((model_dir / name).is_file() for name in markers):
        raise ModelLoadError(f"{model_dir} has none of {', '.join(markers)} at its root")
    if (model_dir / SPEC_FILE).is_file():
        spec = ModelSpec.read(model_dir)
        _check_compile_precision(spec, compile_form)
        if not (model_dir / spec.weights).is_file():
            raise ModelLoadError(f"{spec.weights} named by {SPEC_FILE} is missing in {model_dir}")
        if compile_form == "none" and spec.serve and not (model_dir / spec.serve.file).is_file():
            raise ModelLoadError(
                f"{spec.serve.file} named by {SPEC_FILE} is missing in {model_dir}"
            )
    elif compile_form != "none":
        raise ModelLoadError(f"--compile needs a {SPEC_FILE} model; {model_dir} has none")
    if compile_form != "none":
        with tempfile.TemporaryDirectory(prefix="scorer-compile-") as tmp:
            staging = Path(tmp) / "model"
            shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("__pycache__"))
            if spec.serve is not None:  # a previous compiled form is replaced
                (staging / spec.serve.file).unlink(missing_ok=True)
            (staging / SPEC_FILE).write_text(replace(spec, serve=None).to_json())
            outcome = _compile(staging, compile_form, keep_compiled)
            if outcome.file is not None:
                (staging / SPEC_FILE).write_text(replace(spec, serve=outcome.serve).to_json())
            return replace(package_directory(staging, out_path), compiled=outcome)
    precision = _compare_precision(model_dir)
    digest = pack_directory(model_dir, out_path)
    files = tuple(
        sorted(
            p.relative_to(model_dir).as_posix()
            for p in model_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
    )
    return PackageResult(out_path, digest, files, out_path.stat().st_size, precision=precision)


def _check_compile_precision(spec: ModelSpec, compile_form: str) -> None:
    """A compiled form runs in float32: refuse to compile a spec asking for another."""
    if compile_form != "none" and spec.dtype != "float32":
        raise ModelLoadError(
            f"--compile {compile_form} makes a float32 form, but {SPEC_FILE} asks for "
            f"{spec.dtype} inference: package it without --compile"
        )


def _compare_precision(model_dir: Path) -> PrecisionCheck | None:
    """Half precision against float32 on sample inputs (None for a float32 spec)."""
    from scorer.models.precision import compare_precision

    return compare_precision(model_dir)


def _compile(model_dir: Path, form: str, keep_compiled: bool) -> CompileOutcome:
    """Compile the spec + weights in ``model_dir``; the package lands in ``model_dir``."""
    from scorer.models.compiled import COMPILED_FILES, compile_model

    if form not in COMPILED_FILES:
        raise ModelLoadError(
            f"unknown compiled form {form!r}; known: none, {', '.join(COMPILED_FILES)}"
        )
    out = model_dir / COMPILED_FILES[form]
    outcome = compile_model(model_dir, out, form=form, keep_compiled=keep_compiled)
    if outcome.file is None:
        out.unlink(missing_ok=True)  # not served: not shipped
    return outcome


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
        # new head weights: a compiled form of the original does not describe a variant
        variant_spec = replace(spec, name=f"{spec.name}-{prefix}{index}", serve=None)
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

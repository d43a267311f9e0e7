"""How far a half-precision model's outputs are from float32's: never chosen silently.

A spec may ask for ``float16`` or ``bfloat16`` inference (``"dtype"``). ``scorer package``
and ``scorer validate`` load the model twice, in float32 and in the precision asked for,
run the same sample inputs through both, and report the largest absolute difference of
the outputs (:class:`PrecisionCheck`); outputs that are not finite in half precision (an
overflow) refuse the model. ``scorer package`` uses seeded inputs shaped like normalised
images (:func:`scorer.models.compiled.sample_batch`), ``scorer validate`` also a sample
creative through the serving chain's preprocessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from scorer.errors import ModelLoadError
from scorer.models.compiled import sample_batch
from scorer.models.loading import load_model
from scorer.models.spec import SPEC_FILE, ModelSpec

SAMPLE_BATCHES = (1, 8)  # seeded sample batches: 9 inputs in all


@dataclass(frozen=True)
class PrecisionCheck:
    """The largest difference of the outputs in ``dtype`` from float32's, on ``inputs``
    sample inputs whose largest float32 output was ``scale``."""

    dtype: str
    max_abs_diff: float
    scale: float
    inputs: int

    def line(self) -> str:
        """One report line."""
        return (
            f"precision:    {self.dtype}: max abs diff {self.max_abs_diff:.3g} from float32 "
            f"on {self.inputs} sample inputs (largest output {self.scale:.3g})"
        )


def sample_inputs(size: int) -> torch.Tensor:
    """Seeded inputs shaped like normalised ``size`` x ``size`` images."""
    return torch.cat([sample_batch(size, batch, seed) for seed, batch in enumerate(SAMPLE_BATCHES)])


def compare_precision(
    model_dir: Path,
    inputs: torch.Tensor | None = None,
    *,
    allow_pickle: bool = False,
) -> PrecisionCheck | None:
    """Compare the model's outputs in its spec's dtype with float32's on ``inputs`` (default:
    :func:`sample_inputs`), on the CPU; None when the spec asks for float32 (or there is
    no spec).

    Raises:
        ModelLoadError: the model does not load, or its half-precision outputs are not
            finite where float32's are.
    """
    if not (model_dir / SPEC_FILE).is_file():
        return None
    spec = ModelSpec.read(model_dir)
    if spec.dtype == "float32":
        return None
    cpu = torch.device("cpu")
    if inputs is None:
        inputs = sample_inputs(spec.input.size)
    reference = load_model(model_dir, cpu, allow_pickle=allow_pickle, dtype="float32")
    half = load_model(model_dir, cpu, allow_pickle=allow_pickle)
    with torch.inference_mode():
        want, got = reference(inputs).float(), half(inputs).float()
    if want.shape != got.shape:
        shapes = f"{tuple(got.shape)}, float32's {tuple(want.shape)}"
        raise ModelLoadError(f"{spec.dtype} outputs have shape {shapes}")
    diff = float((got - want).abs().max())
    if not math.isfinite(diff) and bool(torch.isfinite(want).all()):
        raise ModelLoadError(
            f"{SPEC_FILE} asks for {spec.dtype}, but the model's outputs are not finite in "
            f"{spec.dtype} on sample inputs (an overflow): serve it in float32"
        )
    return PrecisionCheck(spec.dtype, diff, float(want.abs().max()), int(inputs.shape[0]))

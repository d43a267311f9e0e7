"""``scorer package --compile``: an ahead-of-time compiled form of a model, chosen by measurement.

At packaging time only (never while serving), the eager network a spec + state_dict
describes is exported with ``torch.export`` for its declared input, with a dynamic batch
dimension (1..``max_batch``), and compiled by AOTInductor into a package (``.pt2``) holding
a shared library and its weights. Then, on this machine:

1. its outputs are compared with eager's on seeded random inputs of batch 1, 3 and 8 (the
   largest absolute difference must be at most :data:`ABS_TOLERANCE`, scaled by the largest
   eager output when that is above 1);
2. both are timed at batch 1 and 8, in rounds that run each form once (median forward
   time per image), and compared round by round: the median of the per-round ratios
   compiled/eager, which a noisy machine's drift affects less than two separate medians;
3. it is recorded as the form to serve (``spec.json`` ``"serve"``) only if the outputs
   match and that ratio is below 1 at both batch sizes, or the caller keeps it
   regardless.

On x86-64 the C++ is compiled for ``x86-64-v3`` (AVX2, FMA: Intel from Haswell, AMD from
Zen) with AVX2 vector kernels, not for the packaging machine's own CPU (Inductor's
default, ``-march=native``), which may have instructions the serving host lacks; the
loader checks the host's CPU capability first. Serving loads it without a compiler
(:func:`scorer.models.loading.load_compiled`).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scorer.errors import ModelLoadError
from scorer.models.loading import LoadedModel, aoti_metadata, load_compiled, load_model
from scorer.models.spec import Latency, ModelSpec, ServeSpec

COMPILED_FILES = {"aoti": "model.aoti.pt2"}
DEFAULT_MAX_BATCH = 64
ABS_TOLERANCE = 1e-4  # per output, times max(1, largest |eager output|)
CHECK_BATCHES = (1, 3, 8)
TIMED_BATCHES = (1, 8)
# Portable code for x86-64 hosts: AVX2 + FMA (x86-64-v3), AVX2 vector kernels (256 bits).
_PORTABLE_X86 = {"cpp.march": "x86-64-v3", "cpp.simdlen": 256}

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CompileOutcome:
    """What compiling and measuring found, and which form the archive serves."""

    form: str
    chosen: str  # the form recorded to serve: ``form`` or "eager"
    reason: str
    compile_s: float
    max_abs_diff: float
    tolerance: float
    eager_ms: Latency
    compiled_ms: Latency
    ratio: Latency  # compiled / eager forward time, median over paired rounds
    file: Path | None  # the compiled package, when it is recorded
    serve: ServeSpec | None  # the record for spec.json, when it is recorded

    def lines(self) -> list[str]:
        """A short human-readable report."""
        return [
            f"compiled:     {self.form} in {self.compile_s:.1f} s",
            f"outputs:      max abs diff {self.max_abs_diff:.3g} vs eager "
            f"(tolerance {self.tolerance:.3g}; batches {', '.join(map(str, CHECK_BATCHES))})",
            f"forward:      eager {_ms(self.eager_ms)}, {self.form} {_ms(self.compiled_ms)} "
            "ms per image at batch 1 / 8 (medians, this machine)",
            f"ratio:        {self.form} / eager time {_ms(self.ratio)} at batch 1 / 8 "
            "(median of paired rounds)",
            f"serves:       {self.chosen} ({self.reason})",
        ]


def compile_model(
    model_dir: Path,
    out_file: Path,
    *,
    form: str = "aoti",
    max_batch: int = DEFAULT_MAX_BATCH,
    keep_compiled: bool = False,
    time_budget_s: float = 2.0,
) -> CompileOutcome:
    """Compile the spec + state_dict model in ``model_dir`` to ``out_file``, check, measure.

    Raises:
        ModelLoadError: the model is not a spec + state_dict model, the form is unknown,
            or export or compilation fails (the message says why).
    """
    if form not in COMPILED_FILES:
        raise ModelLoadError(f"unknown compiled form {form!r}; known: {sorted(COMPILED_FILES)}")
    if not 1 <= max_batch <= 4096:
        raise ModelLoadError("max_batch must be in 1..4096")
    cpu = torch.device("cpu")
    eager = load_model(model_dir, cpu, compiled=False)
    if eager.source != "state_dict":
        raise ModelLoadError(
            f"--compile needs a spec + state_dict model (safetensors or .pt), not {eager.source}"
        )
    started = time.perf_counter()
    metadata = export_aoti(eager.network, eager.spec, out_file, max_batch=max_batch)
    compile_s = time.perf_counter() - started
    serve = ServeSpec(
        form=form,
        file=COMPILED_FILES[form],
        device="cpu",
        machine=metadata.get("AOTI_MACHINE", platform.machine()),
        cpu_isa=metadata.get("AOTI_CPU_ISA", ""),
        torch=torch.__version__.split("+")[0],
        max_batch=max_batch,
        layout="channels_last",
    )
    staged = dataclasses.replace(eager.spec, serve=serve)
    try:
        compiled = load_compiled(out_file.parent, _named(staged, out_file), cpu)
    except ModelLoadError as exc:
        raise ModelLoadError(f"the compiled package does not load: {exc.message}") from None
    diff, scale = max_abs_diff(eager, compiled, eager.spec.input.size)
    tolerance = ABS_TOLERANCE * max(1.0, scale)
    timings = time_forwards(
        {"eager": eager, form: compiled}, eager.spec.input.size, budget_s=time_budget_s
    )
    eager_ms, compiled_ms = timings.median("eager"), timings.median(form)
    ratio = timings.ratio(form, "eager")
    chosen, reason = choose(form, diff, tolerance, ratio, keep_compiled=keep_compiled)
    record = None
    if chosen == form:
        record = dataclasses.replace(
            serve,
            max_abs_diff=float(f"{diff:.3g}"),
            tolerance=float(f"{tolerance:.3g}"),
            compile_s=round(compile_s, 1),
            eager_ms=eager_ms,
            compiled_ms=compiled_ms,
        )
    return CompileOutcome(
        form=form,
        chosen=chosen,
        reason=reason,
        compile_s=compile_s,
        max_abs_diff=diff,
        tolerance=tolerance,
        eager_ms=eager_ms,
        compiled_ms=compiled_ms,
        ratio=ratio,
        file=out_file if record is not None else None,
        serve=record,
    )


def choose(
    form: str, diff: float, tolerance: float, ratio: Latency, *, keep_compiled: bool = False
) -> tuple[str, str]:
    """The form to serve and why: the compiled one if its outputs match eager's and it took
    less time than eager (``ratio`` below 1) at batch 1 and at batch 8 (or
    ``keep_compiled``), else eager."""
    if not diff <= tolerance:  # also refuses NaN
        return "eager", f"outputs differ from eager by {diff:.3g} > {tolerance:.3g}"
    if ratio.batch1 < 1 and ratio.batch8 < 1:
        return form, "outputs match eager and it measured faster at batch 1 and 8"
    if keep_compiled:
        return form, "outputs match eager; kept although it did not measure faster"
    return "eager", f"{form} did not measure faster than eager at both batch 1 and 8"


def export_aoti(
    network: torch.nn.Module, spec: ModelSpec, out_file: Path, *, max_batch: int
) -> dict[str, str]:
    """``torch.export`` ``network`` for ``(batch, 3, size, size)`` channels-last float images,
    batch dynamic in 1..``max_batch``, and compile it with AOTInductor to ``out_file``.

    Returns the package's metadata (device, machine, CPU ISA).

    Raises:
        ModelLoadError: export or compilation failed.
    """
    size = spec.input.size
    example = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    options = dict(_PORTABLE_X86) if platform.machine() in ("x86_64", "AMD64") else {}
    try:
        from torch._inductor import aoti_compile_and_package

        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        with torch.no_grad():
            aoti_compile_and_package(program, package_path=str(out_file), inductor_configs=options)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        reason = text[0][:300] if text else type(exc).__name__
        raise ModelLoadError(f"AOTInductor compilation failed: {reason}") from None
    return aoti_metadata(out_file)


def sample_batch(size: int, batch: int, seed: int) -> torch.Tensor:
    """Seeded normalised-image-like input: standard normal, channels last."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(batch, 3, size, size, generator=generator)
    return data.contiguous(memory_format=torch.channels_last)


def max_abs_diff(
    eager: Forward | LoadedModel,
    compiled: Forward,
    size: int,
    batches: Sequence[int] = CHECK_BATCHES,
) -> tuple[float, float]:
    """The largest absolute output difference over sample batches, and the largest
    absolute eager output (the outputs' scale)."""
    diff, scale = 0.0, 0.0
    with torch.inference_mode():
        for seed, batch in enumerate(batches):
            data = sample_batch(size, batch, seed)
            want, got = eager(data), compiled(data)
            if want.shape != got.shape:
                return math.inf, 0.0
            diff = max(diff, float((want.float() - got.float()).abs().max()))
            scale = max(scale, float(want.float().abs().max()))
    return diff, scale


@dataclass(frozen=True)
class Timings:
    """Forward time per image (ms) of each form at each timed batch size, one sample per
    round; a round runs every form once, in turn."""

    samples: dict[str, dict[int, list[float]]]

    def median(self, name: str) -> Latency:
        """The median time per image at batch 1 and 8."""
        ms = self.samples[name]
        return Latency(*(round(statistics.median(ms[batch]), 3) for batch in TIMED_BATCHES))

    def ratio(self, name: str, baseline: str) -> Latency:
        """The median over rounds of ``name``'s time over ``baseline``'s in the same round."""
        ratios = []
        for batch in TIMED_BATCHES:
            pairs = zip(self.samples[name][batch], self.samples[baseline][batch], strict=True)
            ratios.append(round(statistics.median(a / b for a, b in pairs), 3))
        return Latency(*ratios)

    def quartiles(self, name: str, batch: int) -> tuple[float, float, float]:
        """The 25th, 50th and 75th percentiles of the time per image at ``batch``."""
        q1, q2, q3 = statistics.quantiles(self.samples[name][batch], n=4)
        return q1, q2, q3


def time_forwards(
    forwards: dict[str, Any],
    size: int,
    *,
    budget_s: float = 2.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
) -> Timings:
    """Time each callable at batch 1 and 8 in rounds (so drift hits all alike) until
    ``budget_s`` per batch size is spent, at least ``min_rounds`` and at most
    ``max_rounds`` rounds, after two warm-up calls each."""
    samples: dict[str, dict[int, list[float]]] = {name: {} for name in forwards}
    with torch.inference_mode():
        for batch in TIMED_BATCHES:
            data = sample_batch(size, batch, seed=100 + batch)
            for name, forward in forwards.items():
                samples[name][batch] = []
                forward(data)  # warm-up (lazy initialisation, allocator)
                forward(data)
            deadline = time.perf_counter() + budget_s
            rounds = 0
            while rounds < min_rounds or (time.perf_counter() < deadline and rounds < max_rounds):
                for name, forward in forwards.items():
                    started = time.perf_counter()
                    forward(data)
                    samples[name][batch].append((time.perf_counter() - started) * 1000 / batch)
                rounds += 1
    return Timings(samples)


def _named(spec: ModelSpec, out_file: Path) -> ModelSpec:
    assert spec.serve is not None
    return dataclasses.replace(spec, serve=dataclasses.replace(spec.serve, file=out_file.name))


def _ms(latency: Latency) -> str:
    return f"{latency.batch1:.2f} / {latency.batch8:.2f}"

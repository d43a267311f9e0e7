"""``python -m bench.compiled``: eager vs the compiled forward ``scorer package --compile``
makes, for the bench's creative scorers (mobilenet_v3_small, resnet50; 224x224, 3 heads).

For each model it runs scorer's own packaging step (:func:`scorer.models.compiled.
compile_model`: torch.export + AOTInductor, output check, timing), then times the forms
again, interleaved, for longer: eager (channels last, as served), the AOTInductor package
loaded as the server loads it, and, as a reference, a frozen TorchScript graph
(``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``, deprecated in torch 2.14).
Prints JSON: per-image forward latency at batch 1 and 8 (median and quartiles over the
rounds, and the median per-round ratio to eager), compile and load seconds and the
largest output difference from eager.

The weights are seeded, with batch-norm statistics gathered on random inputs first: with
untrained running statistics, mobilenet_v3_small's output does not depend on its input,
which would make the output check meaningless.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bench.models import BACKBONES, calibrate_batch_norm, spec_for
from scorer.models.compiled import (
    TIMED_BATCHES,
    choose,
    compile_model,
    max_abs_diff,
    sample_batch,
    time_forwards,
)
from scorer.models.family import build_network
from scorer.models.loading import load_model
from scorer.models.spec import SPEC_FILE

Forward = Callable[[torch.Tensor], torch.Tensor]


def calibrated_model_dir(backbone: str, root: Path) -> Path:
    """A spec + safetensors model dir with seeded weights and gathered batch-norm stats."""
    spec = spec_for(backbone, f"bench-{backbone}")
    torch.manual_seed(0)
    network = calibrate_batch_norm(build_network(spec), spec.input.size)
    model_dir = root / backbone
    model_dir.mkdir(parents=True)
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(model_dir / spec.weights))
    (model_dir / SPEC_FILE).write_text(spec.to_json())
    return model_dir


def frozen_torchscript(network: torch.nn.Module, size: int) -> tuple[Forward, float]:
    """The deprecated route, for reference: trace, freeze, optimize_for_inference."""
    started = time.perf_counter()
    example = sample_batch(size, 2, seed=0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(network, example)  # type: ignore[no-untyped-call]
        frozen = torch.jit.freeze(traced.eval())
        optimized = torch.jit.optimize_for_inference(frozen)
    return optimized, time.perf_counter() - started


def timed(forwards: dict[str, Forward], size: int, budget_s: float) -> dict[str, Any]:
    """Per-image forward ms at batch 1 and 8 (median and quartiles over rounds that run
    every form once, in turn) and each form's time over eager's (median over rounds)."""
    timings = time_forwards(forwards, size, budget_s=budget_s, min_rounds=10, max_rounds=300)
    out: dict[str, Any] = {}
    for name in forwards:
        ratio = timings.ratio(name, "eager")
        out[name] = {
            f"batch{batch}": {
                "median": round(q2, 2),
                "p25": round(q1, 2),
                "p75": round(q3, 2),
                "rounds": len(timings.samples[name][batch]),
                "vs_eager": getattr(ratio, f"batch{batch}"),
            }
            for batch in TIMED_BATCHES
            for q1, q2, q3 in [timings.quartiles(name, batch)]
        }
    return out


def bench_model(backbone: str, root: Path, budget_s: float) -> dict[str, Any]:
    model_dir = calibrated_model_dir(backbone, root)
    cpu = torch.device("cpu")
    package = model_dir / "model.aoti.pt2"
    outcome = compile_model(model_dir, package, keep_compiled=True)
    assert outcome.serve is not None, outcome.reason  # keep_compiled: only a mismatch drops it
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    spec["serve"] = outcome.serve.to_dict()
    (model_dir / SPEC_FILE).write_text(json.dumps(spec))

    started = time.perf_counter()
    eager = load_model(model_dir, cpu, compiled=False)
    eager_load_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = load_model(model_dir, cpu)
    compiled_load_s = time.perf_counter() - started
    assert compiled.source == "aoti", compiled.fallback_reason
    size = eager.spec.input.size
    torchscript, torchscript_s = frozen_torchscript(eager.network, size)
    ts_diff, _ = max_abs_diff(eager, torchscript, size)
    forwards: dict[str, Forward] = {"eager": eager, "aoti": compiled, "torchscript": torchscript}
    return {
        "compile_s": {"aoti": round(outcome.compile_s, 1), "torchscript": round(torchscript_s, 1)},
        "load_s": {"eager": round(eager_load_s, 3), "aoti": round(compiled_load_s, 3)},
        "max_abs_diff": {"aoti": outcome.max_abs_diff, "torchscript": ts_diff},
        "tolerance": outcome.tolerance,
        "package_size_mb": round(package.stat().st_size / 1e6, 1),
        "packaging": {
            "eager_ms": dataclasses.asdict(outcome.eager_ms),
            "aoti_ms": dataclasses.asdict(outcome.compiled_ms),
            # what `scorer package --compile aoti` (without --keep-compiled) records
            "ratio": dataclasses.asdict(outcome.ratio),
            "serves": choose("aoti", outcome.max_abs_diff, outcome.tolerance, outcome.ratio)[0],
        },
        "forward_ms_per_image": timed(forwards, size, budget_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument(
        "--budget", type=float, default=15.0, help="seconds of timing per batch size and model"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
        },
        "budget_s": args.budget,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="scorer-bench-compiled-") as tmp:
        for backbone in args.models:
            print(f"{backbone}: compiling and timing ...", file=sys.stderr, flush=True)
            results["models"][backbone] = bench_model(backbone, Path(tmp), args.budget)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

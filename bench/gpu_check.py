"""``scripts/gpu-check``: every GPU verification of issue #22 in one run, one table, one JSON.

``python -m bench.gpu_check`` on a machine with a CUDA GPU (sized for about 5 minutes on one
H200, an estimate: it has not run on a GPU yet),
or ``--dry-run`` on any machine: the same code paths on the CPU with tiny sizes (small
torchvision models with random weights built here, small images, a few cycles), well
under a minute on two cores, so CI keeps the check working. In a dry run every figure is
taken on the CPU and labelled so (``"on": "cpu"``); nothing is made up, and the targets
that only a GPU can meet are reported, never failed.

Checks, each a section of the JSON (``checks.<name>``) and rows of the table:

* ``placement``: ``select_device`` (auto, and ``cuda`` without CUDA: the error), the
  most-free-GPU choice, several models loaded by scorer's loader all on the one device;
* ``decode``: JPEGs decoded and preprocessed on the device (nvJPEG, one call per batch)
  against the CPU path (PIL with ``draft``): time per image and the largest difference of
  the inputs and of the scores;
* ``precision``: float16 and bfloat16 scores against float32 (largest difference) and
  forward time per image;
* ``batching``: forward throughput at several batch sizes, host batches copied from pinned
  memory without blocking; pinned against pageable copy time; the best batch size;
* ``limit``: the in-process GPU limit: device decode + half-precision forward at the best
  batch size, no server;
* ``memory``: device memory before a load, after it and after the unload, over N
  load/unload cycles (growth in %; the target is at most 5 %);
* ``oom``: a real oversize allocation inside a forward pass, through the real MMS handler
  (``HandlerService`` with MMS's own request decoding): 507, and the worker keeps serving;
* ``server``: the real Multi Model Server: load time, device memory per model, scorer over
  HTTP at each concurrency against the limit and the toolkit-style handler, device memory
  over load/unload cycles of worker processes, and the oversize model's 507 over HTTP.

The exit status is 1 when a check fails or errs (a wrong answer, memory that does not come
back), 0 otherwise; throughput targets are reported as met or not, never failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench import gpu_sections, gpu_server
from bench.gpu_workbench import Check, Settings, Workbench
from scorer.cpus import cpu_count
from scorer.serving.resources import select_device

RESULTS_DIR = Path(__file__).with_name("results")
SCHEMA = "scorer.gpu-check/v1"
SECTIONS = ("placement", "decode", "precision", "batching", "limit", "memory", "oom", "server")


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings: the GPU run's, or the dry run's tiny ones."""
    skip = frozenset(args.skip)
    if args.dry_run:
        return Settings(
            dry_run=True,
            device=torch.device("cpu"),
            models=("mobilenet_v3_small", "resnet18"),
            input_size=64,
            image_side=160,
            decode_images=4,
            batch_sizes=(1, 2, 4),
            dtypes=("float16", "bfloat16"),
            cycles=args.cycles or 3,
            server_cycles=args.server_cycles or 2,
            concurrency=(1, 2),
            duration_s=0.5,
            warmup_s=0.1,
            reps=2,
            skip=skip,
        )
    device = select_device("auto", None, "most-free")
    if device.type != "cuda":
        raise SystemExit("gpu-check: no CUDA device here; run it with --dry-run on the CPU")
    return Settings(
        dry_run=False,
        device=device,
        models=("resnet50", "mobilenet_v3_small"),
        input_size=224,
        image_side=1080,
        decode_images=64,
        batch_sizes=(1, 8, 16, 32, 64, 128),
        dtypes=("float16", "bfloat16"),
        cycles=args.cycles or 100,
        server_cycles=args.server_cycles or 10,
        concurrency=(1, 8, 32, 64),
        duration_s=5.0,
        warmup_s=2.0,
        reps=5,
        skip=skip,
    )


CHECKS: dict[str, Callable[[Workbench], Check]] = {
    "placement": gpu_sections.check_placement,
    "decode": gpu_sections.check_decode,
    "precision": gpu_sections.check_precision,
    "batching": gpu_sections.check_batching,
    "limit": gpu_sections.check_limit,
    "memory": gpu_sections.check_memory,
    "oom": gpu_sections.check_oom,
    "server": gpu_server.check_server,
}


# --- running, the table, the JSON ----------------------------------------------------------


def run_checks(settings: Settings, workdir: Path) -> Iterator[Check]:
    """Each section in order; an exception is that section's error, the others still run."""
    bench = Workbench(settings, workdir)
    for name, run in CHECKS.items():
        if name in settings.skip:
            yield Check(name, settings.on, status="skipped")
            continue
        if name == "server" and shutil.which("java") is None:
            note = "no Java here: Multi Model Server cannot start (the GPU machines lent here)"
            yield Check(name, settings.on, status="skipped", note=note)
            continue
        started = time.perf_counter()
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        try:
            check = run(bench)
        except Exception as exc:
            traceback.print_exc()
            check = Check(name, settings.on, status="error", note=f"{type(exc).__name__}: {exc}")
            check.row("error", f"{type(exc).__name__}: {str(exc)[:120]}", "FAIL")
        check.figures["seconds"] = round(time.perf_counter() - started, 2)
        yield check


def machine(settings: Settings) -> dict[str, Any]:
    """Where the run happened."""
    import torchvision

    return {
        "device": str(settings.device),
        "gpu": torch.cuda.get_device_name(settings.device)
        if settings.device.type == "cuda"
        else None,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpus": cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def table(checks: list[Check]) -> str:
    """One text table: check, item, where, value, verdict."""
    rows = [("check", "item", "on", "value", "verdict")]
    for check in checks:
        on = "cpu" if check.on == "cpu" else check.on.split(" ", 1)[0]
        if check.status in ("skipped",) or not check.rows:
            rows.append((check.name, check.status, on, _clipped(check.note), ""))
        for item, value, verdict in check.rows:
            rows.append((check.name, item, on, _clipped(value), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as null (a run too short to time anything gives
    NaN percentiles), so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _clipped(text: str, width: int = 60) -> str:
    """A table cell no wider than ``width`` (the JSON keeps the whole text)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def default_out(dry_run: bool) -> Path:
    """``$OUT/gpu-check.json`` when ``OUT`` is set (the device machine's output folder),
    else under ``bench/results/``."""
    name = "gpu-check-dry-run.json" if dry_run else "gpu-check.json"
    out = os.environ.get("OUT")
    return Path(out) / name if out else RESULTS_DIR / name


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu-check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="the same code paths on the CPU, tiny sizes (CI)"
    )
    parser.add_argument("--out", type=Path, help="JSON path (default: $OUT or bench/results/)")
    parser.add_argument("--cycles", type=int, help="in-process load/unload cycles (100)")
    parser.add_argument("--server-cycles", type=int, help="worker load/unload cycles (10)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=SECTIONS,
        metavar="SECTION",
        help=f"sections to leave out: {', '.join(SECTIONS)}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the table, write the JSON; 1 when a check failed or erred."""
    args = parse(argv)
    settings = settings_from(args)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="scorer-gpu-check-"))
    try:
        checks = list(run_checks(settings, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [c.name for c in checks if c.status in ("fail", "error")]
    results = {
        "schema": SCHEMA,
        "dry_run": settings.dry_run,
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(settings),
        "settings": {
            k: (sorted(v) if isinstance(v, frozenset) else v)
            for k, v in asdict(settings).items()
            if k != "device"
        },
        "checks": {c.name: c.to_dict() for c in checks},
        "table": [
            {"check": c.name, "item": item, "value": value, "verdict": verdict}
            for c in checks
            for item, value, verdict in c.rows
        ],
        "failed": failed,
    }
    print(table(checks))
    label = "dry run on the CPU" if settings.dry_run else settings.on
    ran = [c for c in checks if c.status != "skipped"]
    skipped = len(checks) - len(ran)
    print(
        f"\n{label}: {len(ran) - len(failed)} of {len(ran)} sections passed"
        + (f" ({skipped} skipped)" if skipped else "")
        + f" in {results['seconds']} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    out: Path = args.out or default_out(settings.dry_run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_ready(results), indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

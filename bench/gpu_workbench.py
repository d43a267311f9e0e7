"""What every section of the GPU check shares: its settings, its outcome record (:class:`Check`),
the models and images it measures (:class:`Workbench`), and timing on the device.

See :mod:`bench.gpu_check` for the checks and how to run them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import inputs, models
from bench.load import Measurement
from scorer.models.loading import LoadedModel, load_model


@dataclass(frozen=True)
class Settings:
    """What one run measures, and how much of it."""

    dry_run: bool
    device: torch.device
    models: tuple[str, ...]  # torchvision backbones; the first is the large one
    input_size: int
    image_side: int  # square JPEG creatives of this side
    decode_images: int  # JPEGs per decode measurement
    batch_sizes: tuple[int, ...]
    dtypes: tuple[str, ...]  # half precisions compared with float32
    cycles: int  # in-process load/unload cycles
    server_cycles: int  # POST /models + DELETE cycles (a worker process each)
    concurrency: tuple[int, ...]
    duration_s: float
    warmup_s: float
    reps: int
    skip: frozenset[str]

    @property
    def on(self) -> str:
        """Where the figures are taken, as the JSON and table say it."""
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    @property
    def half(self) -> str:
        """The precision the throughput sections run in: float16 on CUDA, float32 on CPU."""
        return "float16" if self.device.type == "cuda" else "float32"


@dataclass
class Check:
    """One section's outcome: its figures, its table rows, and whether it passed."""

    name: str
    on: str
    status: str = "ok"  # ok | fail | error | skipped
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # item, value, verdict
    note: str = ""

    def row(self, item: str, value: object, verdict: str = "") -> None:
        """Add a table row."""
        self.rows.append((item, _text(value), verdict))

    def require(self, ok: bool, item: str, value: object) -> None:
        """A correctness check: its row says ok or FAIL, and a failure fails the section."""
        self.row(item, value, "ok" if ok else "FAIL")
        if not ok:
            self.status = "fail"

    def target(self, met: bool, item: str, value: object, target: str) -> None:
        """A target: met or not (a GPU figure; a dry run's CPU figure only says so)."""
        verdict = "met" if met else "not met"
        self.row(item, value, f"{verdict} ({target})")
        self.figures.setdefault("targets", {})[item] = {"met": met, "target": target}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {"status": self.status, "on": self.on, "note": self.note, **self.figures}


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- the models and images every section shares -------------------------------------------


class Workbench:
    """The run's model directories, sample JPEGs and cross-section results."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.models_root = workdir / "models"
        self.models_root.mkdir(parents=True)
        build = workdir / "build"
        build.mkdir()
        self.model_dirs: dict[str, Path] = {}  # float32
        self.served_dirs: dict[str, Path] = {}  # in the precision the throughput runs use
        for backbone in settings.models:
            for dtype in sorted({"float32", settings.half}):
                name = f"{backbone}-scorer" + ("" if dtype == "float32" else f"-{dtype}")
                archive = models.build_archive(
                    backbone, name, build, size=settings.input_size, calibrated=True, dtype=dtype
                )
                model_dir = models.extract(archive, self.models_root, name)
                if dtype == "float32":
                    self.model_dirs[backbone] = model_dir
                if dtype == settings.half:
                    self.served_dirs[backbone] = model_dir
        self.jpegs = [
            inputs.encode(inputs.creative(settings.image_side, settings.image_side, seed), "JPEG")
            for seed in range(settings.decode_images)
        ]
        self.spec = models.spec_for(settings.models[0], "x", size=settings.input_size).input
        self.best_batch: dict[str, int] = {}
        self.limit: dict[str, Measurement] = {}

    def load(self, backbone: str, dtype: str = "float32") -> LoadedModel:
        """The backbone's model on the device in ``dtype``, as scorer's loader casts it for
        a spec asking for that precision."""
        return load_model(self.model_dirs[backbone], self.s.device, name=backbone, dtype=dtype)

    def jpeg_batch(self, size: int) -> list[bytes]:
        """``size`` JPEGs, the sample ones repeated."""
        return [self.jpegs[i % len(self.jpegs)] for i in range(size)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """The median wall time of ``fn`` in ms (device work included), after one warm-up."""
    fn()
    sync(device)
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def forward(model: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """The model's float32 outputs for ``batch`` (it casts its input to its own dtype)."""
    with torch.inference_mode():
        out: torch.Tensor = model(batch)
        return out.float()

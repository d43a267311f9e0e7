"""The GPU check's ``server`` section: the real Multi Model Server with scorer's handler.

Load time and device memory per model, scorer over HTTP at each concurrency against the
in-process limit and the toolkit-style handler on the same device, device memory over
load/unload cycles of worker processes, and a real out-of-memory answered 507 over HTTP
by a worker that keeps serving.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench import device_memory, models, oversize
from bench.gpu_sections import GROWTH_TARGET_PERCENT
from bench.gpu_workbench import Check, Workbench
from bench.load import Measurement, http_load, tree_rss
from scorer import config as cfg
from scorer.modelserver.gpu import GpuMemoryMeter
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer
from scorer.modelserver.workers import served_models, worker_memory, worker_processes

LIMIT_TARGET = 0.8  # scorer over HTTP / in-process GPU limit
REFERENCE_TARGET = 10.0  # scorer over HTTP / toolkit-style handler, same GPU


class _Named:
    """A model as ``GpuMemoryMeter.measure`` takes it."""

    def __init__(self, name: str) -> None:
        self.name = name


class ServerCheck:
    """The ``server`` section: MMS with scorer's handler, over HTTP."""

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench
        self.s = bench.s
        self.check = Check("server", self.s.on)
        run = bench.workdir / "run"
        batch = max(bench.best_batch.values(), default=8)
        self.max_batch = min(batch, max(self.s.concurrency), 64)
        environ = {
            **oversize.device_environ(str(self.s.device)),
            cfg.MULTI_MODEL: "true",
            cfg.BIND_TO_PORT: str(free_loopback_port()),
            cfg.MODELS_ROOT: str(bench.models_root),
            cfg.RUN_DIR: str(run),
            cfg.MMS_CONFIG_PATH: str(run / "mms.properties"),
            cfg.DEVICE: "cpu" if self.s.dry_run else "auto",
            cfg.MAX_BATCH_SIZE: str(self.max_batch),
        }
        self.server = ModelServer.from_environ(environ, bind_address="127.0.0.1")
        self.client = httpx.Client(base_url=self.server.url, timeout=300)
        self.body = bench.jpegs[0]

    def register(self, name: str, path: Path) -> float:
        started = time.perf_counter()
        response = self.client.post("/models", json={"model_name": name, "url": str(path)})
        if response.status_code != 200:
            raise RuntimeError(f"loading {name}: {response.status_code} {response.text[:300]}")
        return time.perf_counter() - started

    def unregister(self, name: str) -> None:
        response = self.client.delete(f"/models/{name}")
        if response.status_code != 200:
            raise RuntimeError(f"unloading {name}: {response.status_code}")

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def model_memory(self, name: str) -> int | None:
        """Device memory of the model's workers (nvidia-smi), or their RSS on the CPU."""
        if self.s.device.type == "cuda":
            return asyncio.run(GpuMemoryMeter(self.pid).measure(_Named(name)))
        return worker_memory(self.pid, name)

    def device_used(self) -> int:
        """The device's used memory (nvidia-smi), or the server tree's RSS on the CPU."""
        reading = device_memory.read(self.s.device)
        if reading.device_used is not None:
            return reading.device_used
        return tree_rss(self.pid)

    def run(self) -> Check:
        gc.collect()
        if self.s.device.type == "cuda":  # this process's cached blocks: not the workers'
            torch.cuda.empty_cache()
        self.server.start(output=self.bench.workdir / "mms.log")
        try:
            self.server.wait_ready(timeout=180)
            self.check.figures["max_batch_size"] = self.max_batch
            for backbone in self.s.models:
                self.serve(backbone)
            self.cycles(self.s.models[-1])
            self.oom()
        finally:
            self.client.close()
            self.server.stop(grace=10)
        return self.check

    def http(self, name: str, concurrency: int) -> Measurement:
        return http_load(
            name,
            f"{self.server.url}/models/{name}/invoke",
            self.body,
            "image/jpeg",
            concurrency,
            self.s.duration_s,
            self.s.warmup_s,
            1,
            [self.pid],
        )

    def serve(self, backbone: str) -> None:
        s, check = self.s, self.check
        ours, ref = self.bench.served_dirs[backbone].parent.name, f"{backbone}-reference"
        ours_dir = self.bench.served_dirs[backbone]  # in half precision on the GPU
        build = self.bench.workdir / "build"
        ref_dir = models.extract(
            models.build_archive(backbone, ref, build, reference=True, size=s.input_size),
            self.bench.models_root,
            ref,
        )
        times = []
        for _ in range(1 if s.dry_run else 2):
            times.append(self.register(ours, ours_dir))
            self.unregister(ours)
        self.register(ours, ours_dir)
        self.register(ref, ref_dir)
        memory = self.model_memory(ours)
        runs: list[dict[str, Any]] = []
        for concurrency in s.concurrency:
            m = self.http(ours, concurrency)
            runs.append({"stack": "scorer", **m.to_dict()})
            check.row(
                f"{backbone} scorer c={concurrency}: img/s, p50/p99 ms",
                f"{m.images_per_s:.1f}, {m.p50_ms:.1f}/{m.p99_ms:.1f}",
                f"errors {m.errors}" if m.errors else "",
            )
        for concurrency in sorted({1, max(s.concurrency)}):
            m = self.http(ref, concurrency)
            runs.append({"stack": "reference", **m.to_dict()})
            check.row(
                f"{backbone} toolkit-style c={concurrency}: img/s, p50/p99 ms",
                f"{m.images_per_s:.1f}, {m.p50_ms:.1f}/{m.p99_ms:.1f}",
            )
        self.unregister(ref)
        self.unregister(ours)
        best = max((r["images_per_s"] for r in runs if r["stack"] == "scorer"), default=0.0)
        best_ref = max((r["images_per_s"] for r in runs if r["stack"] == "reference"), default=0)
        limit = self.bench.limit.get(backbone)
        entry: dict[str, Any] = {
            "load_s": [round(t, 3) for t in times],
            "device_memory_mib": None if memory is None else memory >> 20,
            "memory_measure": "nvidia-smi" if s.device.type == "cuda" else "worker rss",
            "runs": runs,
        }
        errors = sum(int(r["errors"]) for r in runs)
        check.require(errors == 0, f"{backbone} HTTP errors", errors)
        check.row(f"{backbone} POST /models to ready, s (best)", round(min(times), 3))
        check.row(
            f"{backbone} memory per model ({entry['memory_measure']}), MiB",
            entry["device_memory_mib"],
        )
        if limit is not None and limit.images_per_s:
            ratio = round(best / limit.images_per_s, 3)
            entry["vs_limit"] = ratio
            check.target(
                ratio >= LIMIT_TARGET,
                f"{backbone} scorer / in-process limit",
                ratio,
                f">= {LIMIT_TARGET}x on the GPU",
            )
        if best_ref:
            ratio = round(best / best_ref, 3)
            entry["vs_reference"] = ratio
            check.target(
                ratio >= REFERENCE_TARGET,
                f"{backbone} scorer / toolkit-style",
                ratio,
                f">= {REFERENCE_TARGET:g}x on the GPU",
            )
        check.figures.setdefault("models", {})[backbone] = entry

    def cycles(self, backbone: str) -> None:
        path = self.bench.served_dirs[backbone]
        name = path.parent.name
        before = self._settled()  # the previous section's workers have exited
        loads, unloads = [], []
        for _ in range(self.s.server_cycles):
            self.register(name, path)
            loads.append(self.device_used())
            self.unregister(name)
            unloads.append(self._settled())
        growth = device_memory.growth_percent(loads[0], loads[-1])
        measure = "nvidia-smi used" if self.s.device.type == "cuda" else "server tree rss"
        self.check.figures["cycles"] = {
            "model": backbone,
            "cycles": self.s.server_cycles,
            "measure": measure,
            "before_mib": before >> 20,
            "after_first_load_mib": loads[0] >> 20,
            "after_first_unload_mib": unloads[0] >> 20,
            "after_last_load_mib": loads[-1] >> 20,
            "after_last_unload_mib": unloads[-1] >> 20,
            "growth_percent": growth,
        }
        self.check.row(
            f"{measure} before / loaded / unloaded, MiB",
            f"{before >> 20} / {loads[0] >> 20} / {unloads[-1] >> 20}",
        )
        label = f"{measure} growth over {self.s.server_cycles} worker cycles"
        if self.s.device.type == "cuda":
            self.check.require(growth <= GROWTH_TARGET_PERCENT, label, f"{growth}%")
            back = (unloads[-1] - before) >> 20
            self.check.require(back <= 64, "used after the last unload - before, MiB", back)
        else:
            self.check.target(
                growth <= GROWTH_TARGET_PERCENT, label, f"{growth}%", "<= 5 % on the device"
            )

    def _settled(self, timeout: float = 15.0) -> int:
        """The device's used memory once no model is served: every unloaded model's
        worker processes have exited (their memory goes back as each process ends)."""
        deadline = time.monotonic() + timeout
        while served_models(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.device_used()

    def oom(self) -> None:
        s = self.s
        name = "oversize"
        model_dir = oversize.build_model_dir(
            s.models[-1], name, self.bench.models_root, size=s.input_size
        )
        self.register(name, model_dir)
        url = f"/models/{name}/invoke"
        workers = {p.pid for p in worker_processes(self.pid, name)}
        statuses = []
        for body, ctype in (
            (self.body, "image/jpeg"),
            (oversize.trigger_body(s.input_size), "application/x-npy"),
            (self.body, "image/jpeg"),
        ):
            statuses.append(
                self.client.post(url, content=body, headers={"Content-Type": ctype}).status_code
            )
        same = workers == {p.pid for p in worker_processes(self.pid, name)}
        self.unregister(name)
        self.check.figures["oom_over_http"] = {"statuses": statuses, "same_worker": same}
        self.check.require(statuses == [200, 507, 200], "HTTP image, oversize, image", statuses)
        self.check.require(same, "the worker kept serving (same process)", same)


def check_server(bench: Workbench) -> Check:
    """The real Multi Model Server: load time, memory, HTTP throughput, cycles, 507."""
    return ServerCheck(bench).run()

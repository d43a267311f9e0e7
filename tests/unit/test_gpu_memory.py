"""The CUDA branches that run without a GPU: device selection and placement, the
``nvidia-smi`` figures (a fake ``nvidia-smi`` on PATH), ``GpuMemoryMeter`` and the
self-managed mode's GPU budget, down to an eviction it causes.

The GPU check (``scripts/gpu-check``) runs the same paths on a real device.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scorer.cache import ModelCache, model_hash
from scorer.cache.budgets import GPU_MEMORY
from scorer.errors import ConfigError
from scorer.modelserver import gpu
from scorer.modelserver.gpu import GpuMemoryMeter
from scorer.serving import resources
from scorer.serving.resources import most_free_gpu, select_device
from scorer.serving.self_managed import gpu_budget
from tests.unit.test_cache import FakeRegistry, make_cache, prefix, run, touch

__all__ = ["prefix"]  # the fixture test_cache's archives come from

MIB = 1 << 20

FAKE_NVIDIA_SMI = """#!/bin/sh
# A stand-in for nvidia-smi: answers the queries scorer makes from files beside it.
state="$(dirname "$0")"
echo "$*" >> "$state/calls.log"
[ -f "$state/fail" ] && { echo "NVIDIA-SMI has failed" >&2; exit 9; }
case "$*" in
  *--query-gpu=memory.total*) cat "$state/total.csv" ;;
  *--query-gpu=memory.used*) cat "$state/used.csv" ;;
  *--query-compute-apps=pid,used_memory*) cat "$state/apps.csv" 2>/dev/null ;;
  *) exit 2 ;;
esac
"""


class FakeSmi:
    """The fake ``nvidia-smi``'s folder (first on PATH) and the figures it prints."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        script = folder / "nvidia-smi"
        script.write_text(FAKE_NVIDIA_SMI)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.gpus(total=[81559], used=[0])

    def gpus(self, *, total: list[int | str], used: list[int | str]) -> None:
        (self.folder / "total.csv").write_text("".join(f"{mib}\n" for mib in total))
        (self.folder / "used.csv").write_text("".join(f"{mib}\n" for mib in used))

    def apps(self, rows: list[tuple[object, object]]) -> None:
        (self.folder / "apps.csv").write_text("".join(f"{pid}, {mib}\n" for pid, mib in rows))

    def add_app(self, pid: int, mib: int) -> None:
        with (self.folder / "apps.csv").open("a") as handle:
            handle.write(f"{pid}, {mib}\n")

    def fail(self) -> None:
        (self.folder / "fail").touch()

    def calls(self) -> list[str]:
        return (self.folder / "calls.log").read_text().splitlines()


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmi:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return FakeSmi(folder)


# --- nvidia-smi's figures -------------------------------------------------------------------


def test_total_and_used_memory_sum_the_visible_gpus(smi: FakeSmi) -> None:
    smi.gpus(total=[81559, 81559], used=[1200, 34])
    assert gpu.total_gpu_memory() == 2 * 81559 * MIB
    assert gpu.used_gpu_memory() == 1234 * MIB
    assert smi.calls() == [
        "--query-gpu=memory.total --format=csv,noheader,nounits",
        "--query-gpu=memory.used --format=csv,noheader,nounits",
    ]


def test_memory_by_process_adds_up_a_process_on_several_gpus(smi: FakeSmi) -> None:
    smi.apps([(1234, 500), (5678, 300), (1234, 100), ("[N/A]", 7), (42, "[N/A]")])
    assert gpu.gpu_memory_by_pid() == {1234: 600 * MIB, 5678: 300 * MIB}


def test_figures_nvidia_smi_does_not_have_are_left_out(smi: FakeSmi) -> None:
    smi.gpus(total=["[N/A]", 40960], used=["[Not Supported]"])
    assert gpu.total_gpu_memory() == 40960 * MIB
    assert gpu.used_gpu_memory() is None


def test_a_failing_nvidia_smi_means_no_figures(
    smi: FakeSmi, caplog: pytest.LogCaptureFixture
) -> None:
    smi.fail()
    with caplog.at_level(logging.WARNING, logger=gpu.__name__):
        assert gpu.total_gpu_memory() is None
        assert gpu.gpu_memory_by_pid() == {}
    assert "nvidia-smi --query-gpu=memory.total failed" in caplog.text


def test_no_nvidia_smi_on_path_means_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.total_gpu_memory() is None and gpu.used_gpu_memory() is None
    assert gpu_budget(0.5, server_pid=os.getpid()) is None


# --- device selection and placement --------------------------------------------------------


def test_the_cpu_when_asked_or_when_there_is_no_cuda() -> None:
    assert not torch.cuda.is_available()  # this host: the branches below are faked
    assert select_device("cpu", 0) == torch.device("cpu")
    assert select_device("auto", None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="SCORER_DEVICE=cuda but CUDA is not available"):
        select_device("cuda", None)


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Fake visible GPUs; the list holds each one's free memory (bytes)."""
    free: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 80 << 30))
    yield free


def test_most_free_placement_picks_the_gpu_with_the_most_free_memory(gpus: list[int]) -> None:
    gpus[:] = [10 << 30, 70 << 30, 30 << 30]
    assert most_free_gpu() == 1
    for preference in ("auto", "cuda"):
        assert select_device(preference, 0, "most-free") == torch.device("cuda", 1)
    gpus[:] = [50 << 30, 5 << 30, 60 << 30]
    assert select_device("auto", 1, "most-free") == torch.device("cuda", 2)


def test_mms_placement_uses_the_gpu_id_mms_assigned(gpus: list[int]) -> None:
    gpus[:] = [10 << 30, 70 << 30, 30 << 30]
    assert select_device("auto", 0, "mms") == torch.device("cuda", 0)
    assert select_device("auto", 5, "mms") == torch.device("cuda", 2)  # modulo the count
    assert select_device("cuda", None, "mms") == torch.device("cuda", 0)


def test_one_gpu_is_shared_by_every_model(gpus: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    gpus[:] = [40 << 30]
    monkeypatch.setattr(resources, "most_free_gpu", lambda: pytest.fail("not asked with one GPU"))
    chosen = {
        select_device("auto", gpu_id, placement)
        for gpu_id in (None, 0, 1, 3)
        for placement in ("most-free", "mms")
    }
    assert chosen == {torch.device("cuda", 0)}


# --- GpuMemoryMeter and the self-managed GPU budget -----------------------------------------


def fake_worker(name: str) -> subprocess.Popen[bytes]:
    """A child of this process that looks like an MMS worker serving ``name``."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--model-name", name]
    )


@pytest.fixture
def workers() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    yield started
    for process in started.values():
        process.kill()
        process.wait()


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_the_meter_reads_the_device_memory_of_the_models_workers(
    smi: FakeSmi, workers: dict[str, subprocess.Popen[bytes]]
) -> None:
    workers["m1"] = fake_worker("m1")
    workers["m2"] = fake_worker("m2")
    smi.apps([(workers["m1"].pid, 700), (workers["m2"].pid, 50), (1, 999)])
    meter = GpuMemoryMeter(os.getpid())

    def measure(name: str) -> int | None:
        return asyncio.run(meter.measure(Named(name)))

    assert measure("m1") == 700 * MIB
    assert measure("m2") == 50 * MIB
    assert measure("m3") is None  # no worker serves it
    smi.apps([(workers["m2"].pid, 50)])
    assert measure("m1") is None  # a worker that holds no device memory: unknown


def test_the_budget_is_a_fraction_of_the_gpus_memory(smi: FakeSmi) -> None:
    smi.gpus(total=[1000, 1000], used=[0, 0])
    budget = gpu_budget(0.25, server_pid=os.getpid())
    assert budget is not None
    assert budget.name == GPU_MEMORY and budget.limit_bytes == 500 * MIB
    assert isinstance(budget.meter, GpuMemoryMeter) and budget.meter.server_pid == os.getpid()


class WorkerRegistry(FakeRegistry):
    """A fake model server whose models get a (fake) worker process holding device memory."""

    def __init__(self, smi: FakeSmi, device_mib: dict[str, int]) -> None:
        super().__init__()
        self.smi = smi
        self.device_mib = device_mib
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    async def register(self, name: str, model_dir: Path) -> None:
        await super().register(name, model_dir)
        worker = fake_worker(name)
        self.workers[name] = worker
        self.smi.add_app(worker.pid, self.device_mib[name])

    async def unregister(self, name: str) -> None:
        await super().unregister(name)
        worker = self.workers.pop(name, None)
        if worker is not None:
            worker.kill()
            worker.wait()


def test_the_gpu_budget_evicts_the_lru_model_measured_by_nvidia_smi(
    tmp_path: Path, prefix: Path, smi: FakeSmi
) -> None:
    smi.gpus(total=[1000], used=[0])
    smi.apps([])
    sizes = {model_hash("a.tar.gz"): 400, model_hash("b.tar.gz"): 400}
    registry = WorkerRegistry(smi, sizes)
    budget = gpu_budget(0.5, server_pid=os.getpid())  # 500 MiB: one model fits, not two
    assert budget is not None
    cache: ModelCache
    cache, _, _ = make_cache(tmp_path, prefix, registry, budgets=[budget])

    async def body() -> None:
        await touch(cache, "a.tar.gz")
        await cache.settle()
        assert cache.resident()[0].footprint == {GPU_MEMORY: 400 * MIB}
        await touch(cache, "b.tar.gz")
        await cache.settle()

    try:
        run(cache, body)
    finally:
        for worker in registry.workers.values():
            worker.kill()
            worker.wait()
    assert cache.stats().resident_models == ("b.tar.gz",)
    assert ("unregister", model_hash("a.tar.gz")) in registry.calls

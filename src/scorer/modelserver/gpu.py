"""GPU memory of the model server's workers: the measure behind the cache's GPU budget.

Measured with ``nvidia-smi`` (present wherever the NVIDIA driver is, including containers
started with ``--gpus``), so neither torch nor NVML bindings are needed here. A model's
footprint is the device memory of the processes serving it
(:func:`scorer.modelserver.workers.worker_processes`); the self-managed mode makes a cache
budget of a fraction of the visible GPUs' total memory from it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from typing import Protocol

from scorer.modelserver.workers import worker_processes

_MIB = 1 << 20

logger = logging.getLogger(__name__)


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, *query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        logger.warning("nvidia-smi %s failed", " ".join(query), exc_info=True)
        return None
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def _mib(cell: str) -> int | None:
    """Bytes for a MiB figure ``nvidia-smi`` printed, or None (``[N/A]``, ``[Not Supported]``)."""
    try:
        return int(float(cell)) * _MIB
    except ValueError:
        return None


def _per_gpu_sum(query: str) -> int | None:
    """The sum over the visible GPUs of a MiB figure, or None without a GPU or a figure."""
    values = [_mib(row[0]) for row in _nvidia_smi(query) or [] if row]
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def total_gpu_memory() -> int | None:
    """Total memory of the visible GPUs in bytes, or None without a GPU."""
    return _per_gpu_sum("--query-gpu=memory.total")


def used_gpu_memory() -> int | None:
    """Memory in use on the visible GPUs in bytes (all processes, CUDA contexts included),
    or None without a GPU."""
    return _per_gpu_sum("--query-gpu=memory.used")


def gpu_memory_by_pid() -> dict[int, int]:
    """Device memory (bytes) used by each process that holds GPU memory."""
    rows = _nvidia_smi("--query-compute-apps=pid,used_memory") or []
    usage: dict[int, int] = {}
    for row in rows:
        try:
            pid, used = int(row[0]), _mib(row[1])
        except (ValueError, IndexError):
            continue
        if used is not None:
            usage[pid] = usage.get(pid, 0) + used
    return usage


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class GpuMemoryMeter:
    """Device memory of the worker processes serving a model (under one MMS process)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def _measure(self, name: str) -> int | None:
        pids = {p.pid for p in worker_processes(self.server_pid, name)}
        if not pids:
            return None
        usage = gpu_memory_by_pid()
        return sum(usage.get(pid, 0) for pid in pids) or None

    async def measure(self, model: _Named) -> int | None:
        """Bytes of device memory ``model`` uses, or None when unknown."""
        return await asyncio.to_thread(self._measure, model.name)

"""Memory readings for the GPU check: torch's allocator, ``nvidia-smi``, and RSS on the CPU.

On a CUDA device a reading holds what torch's caching allocator has allocated and
reserved on it and what ``nvidia-smi`` says is used on the visible GPUs (CUDA contexts and
every process included); on the CPU only the process's resident memory is meaningful, and
:attr:`MemoryReading.key` says which figure a comparison uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psutil
import torch

from scorer.modelserver.gpu import used_gpu_memory


@dataclass(frozen=True)
class MemoryReading:
    """Bytes in use at one moment (None: not measurable on this device)."""

    allocated: int | None  # torch.cuda.memory_allocated on the device
    reserved: int | None  # torch.cuda.memory_reserved on the device
    device_used: int | None  # nvidia-smi memory.used, all visible GPUs
    rss: int  # this process's resident memory

    @property
    def key(self) -> str:
        """The figure that measures the device's memory: ``allocated`` or (CPU) ``rss``."""
        return "rss" if self.allocated is None else "allocated"

    def value(self) -> int:
        """The reading's :attr:`key` figure."""
        return self.rss if self.allocated is None else self.allocated

    def to_dict(self) -> dict[str, int | None]:
        """The JSON-ready form, in MiB."""
        return {key: _mib(value) for key, value in asdict(self).items()}


def _mib(value: int | None) -> int | None:
    return None if value is None else round(value / (1 << 20))


def read(device: torch.device) -> MemoryReading:
    """A reading for ``device`` (after the device's queued work has finished)."""
    rss = psutil.Process().memory_info().rss
    if device.type != "cuda":
        return MemoryReading(None, None, None, rss)
    torch.cuda.synchronize(device)
    return MemoryReading(
        allocated=torch.cuda.memory_allocated(device),
        reserved=torch.cuda.memory_reserved(device),
        device_used=used_gpu_memory(),
        rss=rss,
    )


def growth_percent(first: int, last: int) -> float:
    """How much ``last`` is above ``first``, in percent of ``first`` (0 when both are 0)."""
    if first <= 0:
        return 0.0 if last <= 0 else float("inf")
    return round(100.0 * (last - first) / first, 2)

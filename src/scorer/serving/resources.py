"""Which device a worker runs on and how many CPU threads it may use."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from scorer.errors import ConfigError


def most_free_gpu() -> int:
    """The index of the visible GPU with the most free memory now."""
    import torch

    free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    return max(range(len(free)), key=free.__getitem__)


def select_device(
    preference: str, gpu_id: int | None, placement: str = "most-free"
) -> torch.device:
    """The worker's device when CUDA is usable, else the CPU.

    With several GPUs, ``placement="most-free"`` puts the model on the GPU with the most
    free memory (models come and go, so MMS's round-robin ``gpu_id`` drifts from where the
    room is); ``placement="mms"`` uses the ``gpu_id`` MMS assigned.

    Raises:
        ConfigError: ``preference`` is ``cuda`` but CUDA is not available.
    """
    import torch

    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if placement == "most-free" and count > 1:
            return torch.device("cuda", most_free_gpu())
        index = gpu_id if gpu_id is not None else 0
        return torch.device("cuda", index % count)
    if preference == "cuda":
        raise ConfigError("SCORER_DEVICE=cuda but CUDA is not available in this worker")
    return torch.device("cpu")


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity / container cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def threads_per_worker(configured: int | None, workers: int) -> int:
    """Torch intra-op threads per worker so that workers x threads never exceeds the cores."""
    if configured is not None:
        return configured
    return max(1, cpu_count() // max(1, workers))


def configure_threads(threads: int) -> None:
    """Apply the thread budget to torch (intra-op and inter-op)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)

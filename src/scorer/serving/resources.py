"""Which device a worker runs on, how many CPU threads it may use, how much memory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from scorer.cpus import cpu_count
from scorer.errors import ConfigError
from scorer.inference.image_pool import ImagePool


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


def threads_per_worker(configured: int | None, workers: int) -> int:
    """Torch intra-op threads per worker so that workers x threads never exceeds the cores."""
    if configured is not None:
        return configured
    return max(1, cpu_count() // max(1, workers))


def configure_threads(threads: int) -> ImagePool:
    """Apply the thread budget to torch (intra-op and inter-op) and return the pool that
    gives image decoding and resizing the same budget (the two phases never overlap).

    The caller passes the pool on (``CreativeScoringDefaults(pool=...)``); nothing is kept
    in process-wide state but torch's own settings.
    """
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)
    return ImagePool(threads)


AUTO_MEMORY_SHARE = 0.9  # of the memory free when the model loads


def _cgroup_headroom() -> int | None:
    """Bytes this container may still allocate under its cgroup v2 limit, if it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - current)


def _data_size() -> int:
    """This process's data segment (``VmData``: heap and private writable mappings), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_limit_bytes(setting: str, device_type: str) -> int | None:
    """The worker's data-size limit for ``SCORER_WORKER_MEMORY_LIMIT_MB``, or None (no limit).

    ``auto`` (CPU workers): what the worker has now plus 90 % of the memory free now (the
    host's, or the container's cgroup headroom if smaller). A number: that many MB in all.
    """
    if setting == "off":
        return None
    if setting == "auto":
        if device_type != "cpu":
            return None  # the CUDA driver's host mappings are not ours to bound
        import psutil

        free = psutil.virtual_memory().available
        headroom = _cgroup_headroom()
        if headroom is not None:
            free = min(free, headroom)
        return _data_size() + int(free * AUTO_MEMORY_SHARE)
    return int(setting) * 1024 * 1024


def limit_memory(limit: int | None) -> None:
    """Make allocations past ``limit`` bytes fail in this process (``MemoryError``, 507)
    instead of the kernel's OOM killer ending it, or a neighbour, mid-request."""
    if limit is None:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))

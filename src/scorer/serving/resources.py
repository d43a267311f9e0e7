"""Which device a worker runs on, how many CPU threads it may use, how much memory."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
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


PROBE_BELOW_MS = 30.0  # a warm-up forward slower than this: a model that uses its threads
MIN_THREAD_SPEEDUP = 1.25  # what the worker's threads must gain over one to be kept


def choose_forward_threads(
    forward: Callable[[], object], threads: int, warm_up_ms: float | None, repeats: int = 3
) -> tuple[int, dict[str, float]]:
    """How many torch threads the model's one-image forward pass gets: ``threads``, or 1
    when it is fast and ``threads`` barely speed it up (measured here, best of ``repeats``
    each way). Forward passes of more images keep ``threads``
    (:class:`~scorer.inference.batching.ForwardThreads`).

    A small network's operators are too short to split well: on one image its extra
    threads mostly wait at each operator's end, then spin, taking the cores from the model
    server's frontend and the image decoding; measured on 2 cores, mobilenet_v3_small's p99
    at concurrency 1 fell from 2.35x to 1.33x its p50 with 1 thread, while its batches
    still gain from both (1.15x the requests at concurrency 16, 1.43x the images of JSON
    batches of 8; bench/README.md). A model whose warm-up took ``PROBE_BELOW_MS`` or more
    is not probed: its threads pay (resnet50: 63 ms with 2 threads, 111 ms with 1), and
    the probe would lengthen its cold start (by 0.55 s for resnet50; 36 ms for
    mobilenet_v3_small). ``warm_up_ms``: how long the model's warm-up (one such forward,
    with lazy initialisation) took, or None if it had none.
    Returns the threads for one image and what was measured (ms); torch is left at
    ``threads``.
    """
    import torch

    if threads <= 1 or warm_up_ms is None or warm_up_ms >= PROBE_BELOW_MS:
        return threads, {}

    def best_ms(count: int) -> float:
        torch.set_num_threads(count)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            forward()
            timings.append((time.perf_counter() - started) * 1000)
        return min(timings)

    many, one = best_ms(threads), best_ms(1)
    torch.set_num_threads(threads)
    chosen = threads if one >= MIN_THREAD_SPEEDUP * many else 1
    return chosen, {"forward_ms_threads": round(many, 2), "forward_ms_1_thread": round(one, 2)}


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

"""Decode and resize a request's images on the worker's CPU threads, in order.

A JSON batch of eight 1080x1080 JPEGs spends about a third of its time decoding and
resizing, one image after the other, while the forward pass uses every thread the worker
has. PIL releases the GIL while it decodes and resizes, so the same thread budget
(:func:`scorer.serving.resources.configure_threads`) serves both phases: they never overlap.

Results come back in order and at most one window (the thread count) is in flight ahead of
the caller, so a caller that checks a running total (decoded pixels) stops a hostile batch
after at most one window more, as it would one image at a time.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_threads = 1
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()


def set_threads(threads: int) -> None:
    """Use ``threads`` threads for image work (1: the caller's thread only)."""
    global _threads, _pool
    with _lock:
        threads = max(1, threads)
        if threads != _threads and _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
        _threads = threads


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_threads, thread_name_prefix="scorer-image"
            )
        return _pool


def map_in_order(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``fn(item)`` for each item, in order, a window of ``threads`` items at a time.

    The first exception (in item order) is raised when its result is reached.
    """
    window = _threads
    if window == 1 or len(items) < 2:
        for item in items:
            yield fn(item)
        return
    pool = _executor()
    for start in range(0, len(items), window):
        futures = [pool.submit(fn, item) for item in items[start : start + window]]
        for future in futures:
            yield future.result()

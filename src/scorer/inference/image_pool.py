"""Decode and resize a request's images on the worker's CPU threads, in order.

A JSON batch of eight 1080x1080 JPEGs spends about a third of its time decoding and
resizing, one image after the other, while the forward pass uses every thread the worker
has. PIL releases the GIL while it decodes and resizes, so the same thread budget serves
both phases: they never overlap.

An :class:`ImagePool` is an object, not process state: the worker creates one for its
thread budget (:func:`scorer.serving.resources.configure_threads` returns it) and passes it
to :class:`scorer.inference.defaults.CreativeScoringDefaults`, which passes it on to the
decoders and to preprocessing. Code that passes none gets :data:`SERIAL`, which runs
everything in the caller's thread.

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


class ImagePool:
    """``threads`` threads for image work; with one thread, work runs in the caller's thread.

    The executor is started on first use, so a pool that never maps more than one item
    starts no thread.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, int(threads))
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ImagePool(threads={self.threads})"

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.threads, thread_name_prefix="scorer-image"
                )
            return self._executor

    def map_in_order(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn(item)`` for each item, in order, a window of ``threads`` items at a time.

        The first exception (in item order) is raised when its result is reached.
        """
        window = self.threads
        if window == 1 or len(items) < 2:
            for item in items:
                yield fn(item)
            return
        pool = self._pool()
        for start in range(0, len(items), window):
            futures = [pool.submit(fn, item) for item in items[start : start + window]]
            for future in futures:
                yield future.result()

    def close(self) -> None:
        """Stop the pool's threads (work already submitted finishes)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


SERIAL = ImagePool(1)
"""The pool of code that passes none: every item in the caller's thread, no executor."""

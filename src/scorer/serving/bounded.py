"""Calls with a deadline in seconds, for model loads and requests inside an MMS worker.

MMS bounds a worker's reply with one ``default_response_timeout`` for loads and requests
alike, answers a late request with 500 "Worker died." and restarts the worker (reloading
the model). scorer bounds each separately, inside the worker: the call runs on a helper
thread and the caller stops waiting at the deadline, so the client gets a clear error
(:class:`DeadlineExceededError`) at the time it asked for.

Python cannot stop a running thread. A request that overran keeps running in the
background ("abandoned"); the next request runs on the pool's other thread, so the model
keeps serving. If a second request overruns while an abandoned one still runs, the worker
is wedged: :meth:`BoundedRunner.wedged` says so and the handler exits the worker after
replying, and MMS starts a fresh one.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from scorer.errors import DeadlineExceededError

T = TypeVar("T")


def call_with_deadline(fn: Callable[[], T], seconds: float, name: str) -> T:
    """Run ``fn`` on a daemon thread; raise :class:`DeadlineExceededError` after ``seconds``.

    For one-off calls (a model load): the thread is a daemon, so an abandoned call never
    keeps the process alive.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DeadlineExceededError(seconds)
    if error:
        raise error[0]
    return result[0]


class BoundedRunner:
    """Runs request work with a deadline on a reusable daemon thread, with one spare.

    All work runs on the first thread while it is free: torch's OpenMP keeps one team of
    intra-op threads per calling thread, and two calling threads taking turns would keep
    two teams spinning for the same cores. The spare thread takes work only while the first
    one is still busy with a request abandoned at its deadline, so the next request does not
    wait for it. The threads are daemons (not a ``ThreadPoolExecutor``, whose exit hook joins
    its threads), so an abandoned request never keeps an exiting worker process alive.
    """

    def __init__(self, threads: int = 2) -> None:
        self._lanes: list[queue.SimpleQueue[tuple[Callable[[], object], Future[object]]]] = []
        self._running: list[Future[object] | None] = [None] * threads
        for index in range(threads):
            lane: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]]
            lane = queue.SimpleQueue()
            self._lanes.append(lane)
            threading.Thread(
                target=self._serve, args=(lane,), name=f"scorer-request-{index}", daemon=True
            ).start()
        self._wedged = False

    @staticmethod
    def _serve(lane: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]]) -> None:
        while True:
            fn, future = lane.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

    def _free_lane(self) -> int | None:
        for index, abandoned in enumerate(self._running):
            if abandoned is None or abandoned.done():
                self._running[index] = None
                return index
        return None

    def run(self, fn: Callable[[], T], seconds: float) -> T:
        """``fn()``, or :class:`DeadlineExceededError` once ``seconds`` have passed."""
        lane = self._free_lane()
        if lane is None:  # every thread is stuck in abandoned work
            self._wedged = True
            raise DeadlineExceededError(seconds)
        future: Future[object] = Future()
        self._lanes[lane].put((fn, future))
        try:
            return future.result(timeout=max(seconds, 0.0))  # type: ignore[return-value]
        except concurrent.futures.TimeoutError:
            if future.cancel():  # never started
                raise DeadlineExceededError(seconds) from None
            self._running[lane] = future
            if self._free_lane() is None:
                self._wedged = True  # every thread is now busy with overrunning work
            raise DeadlineExceededError(seconds) from None

    @property
    def wedged(self) -> bool:
        """True once overrunning requests occupy every thread."""
        return self._wedged

    @property
    def abandoned(self) -> int:
        """How many overrunning requests are still running."""
        return sum(1 for f in self._running if f is not None and not f.done())

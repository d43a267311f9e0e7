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
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceededError(Exception):
    """The call did not finish within its deadline (it may still be running)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:g} s")
        self.seconds = seconds


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
    """Runs request work with a deadline on two reusable daemon threads (one spare).

    The spare thread exists only for the case a request was abandoned at its deadline:
    the next request must not wait for it. Torch's intra-op threads are shared, so two
    requests run at once only while one is abandoned. The threads are daemons (not a
    ``ThreadPoolExecutor``, whose exit hook joins its threads), so an abandoned request
    never keeps an exiting worker process alive.
    """

    def __init__(self, threads: int = 2) -> None:
        self._work: queue.SimpleQueue[
            tuple[Callable[[], object], concurrent.futures.Future[object]]
        ] = queue.SimpleQueue()
        for index in range(threads):
            threading.Thread(
                target=self._serve, name=f"scorer-request-{index}", daemon=True
            ).start()
        self._abandoned: list[concurrent.futures.Future[object]] = []
        self._wedged = False

    def _serve(self) -> None:
        while True:
            fn, future = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

    def run(self, fn: Callable[[], T], seconds: float) -> T:
        """``fn()``, or :class:`DeadlineExceededError` once ``seconds`` have passed."""
        self._abandoned = [f for f in self._abandoned if not f.done()]
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._work.put((fn, future))
        try:
            return future.result(timeout=max(seconds, 0.0))  # type: ignore[return-value]
        except concurrent.futures.TimeoutError:
            if future.cancel():  # never started: both threads were busy
                raise DeadlineExceededError(seconds) from None
            if self._abandoned:
                self._wedged = True  # both threads are now busy with overrunning work
            self._abandoned.append(future)
            raise DeadlineExceededError(seconds) from None

    @property
    def wedged(self) -> bool:
        """True once two overrunning requests occupy both threads."""
        return self._wedged

    @property
    def abandoned(self) -> int:
        """How many overrunning requests are still running."""
        return sum(1 for f in self._abandoned if not f.done())

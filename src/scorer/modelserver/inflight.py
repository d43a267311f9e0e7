"""How many requests the model workers are serving right now, for draining on SIGTERM.

MMS has no drain: SIGTERM ends the JVM and its client connections at once. SageMaker stops
routing to an instance before it sends SIGTERM, then allows 30 s before SIGKILL, so the
requests already inside the server should finish first. Each worker keeps its own count in
one small file, ``<run dir>/inflight/<pid>``, rewritten in place (one ``pwrite`` at the
start and one at the end of each batch: microseconds); the entrypoint sums the files of
live workers and stops MMS once the sum has been zero for a moment (:func:`drain`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

_WIDTH = 12  # fixed-width decimal, so a rewrite never leaves stale digits


class InflightCounter:
    """This worker process's count of requests being served."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / str(pid or os.getpid())
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._count = 0
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        os.pwrite(self._fd, str(self._count).rjust(_WIDTH).encode(), 0)

    def add(self, n: int) -> None:
        """Count ``n`` more (negative: fewer) requests in flight."""
        with self._lock:
            self._count = max(0, self._count + n)
            self._write()

    @contextlib.contextmanager
    def serving(self, n: int = 1):  # type: ignore[no-untyped-def]
        """Count ``n`` requests as in flight for the duration of the block."""
        self.add(n)
        try:
            yield
        finally:
            self.add(-n)

    def close(self) -> None:
        """Remove this worker's file."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped; in a container whose init
    does not reap, never) is dead, so its last count cannot hold a drain up."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal check
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def in_flight(directory: Path) -> int:
    """Requests in flight across live workers; files of dead workers are removed."""
    total = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        if not _alive(int(entry.name)):
            entry.unlink(missing_ok=True)
            continue
        with contextlib.suppress(OSError, ValueError):
            total += int(entry.read_bytes().strip() or b"0")
    return total


def drain(directory: Path, timeout: float, quiet: float = 0.3, poll: float = 0.05) -> bool:
    """Wait until no request has been in flight for ``quiet`` s, at most ``timeout`` s.

    Returns True if the workers went quiet, False if the time ran out.
    """
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if in_flight(directory) == 0:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= quiet:
                return True
        else:
            quiet_since = None
        if now >= deadline:
            return False
        time.sleep(poll)

"""The workers' metrics files, summed: what ``/metrics`` serves in every mode.

Each MMS worker writes its values to its own files in the server's ``metrics_dir``
(``<kind>_<pid>.db``; prometheus_client's multiprocess mode). Collecting merges the files
of all workers: counters and histograms add up, and those of a worker that has died stay
in the sum, so a worker's restart never makes a counter go down. Gauges kept per live
process (``livesum``, ``livemax``) must forget a dead worker: before each collection the
files of processes that no longer run are removed (``mark_process_dead``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def prepare(directory: Path) -> None:
    """Create ``directory``, or empty it of a previous server's files (counters restart at
    zero with a new server, as Prometheus expects of a restarted target)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.glob("*.db"):
        entry.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # not ours to inspect: it runs


def reap_dead_workers(directory: Path) -> list[int]:
    """Drop the live gauges of worker processes that have ended; their pids.

    Their counters and histograms stay (they are part of the totals)."""
    dead = set()
    for entry in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match is not None and not alive(int(match[1])):
            dead.add(int(match[1]))
    for pid in sorted(dead):
        with contextlib.suppress(FileNotFoundError):  # another thread's collection was first
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    return sorted(dead)


class WorkerFilesCollector(Collector):
    """The sum of the worker metrics files in ``directory`` (none while it does not exist)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        """Merge the files of all workers, after forgetting the live gauges of dead ones."""
        if not self.directory.is_dir():
            return []
        reap_dead_workers(self.directory)
        files = sorted(str(path) for path in self.directory.glob("*.db"))
        merged: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            files, accumulate=True
        )
        return merged

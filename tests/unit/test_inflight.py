"""scorer.modelserver.inflight: per-worker counts of requests in flight, and the drain."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scorer.modelserver import inflight
from scorer.modelserver.inflight import InflightCounter, drain, in_flight


def test_counts_add_up_across_workers(tmp_path: Path) -> None:
    a = InflightCounter(tmp_path)  # this process
    a.add(3)
    a.add(-1)
    assert in_flight(tmp_path) == 2
    with a.serving(5):
        assert in_flight(tmp_path) == 7
    assert in_flight(tmp_path) == 2
    a.add(-10)  # never below zero
    assert in_flight(tmp_path) == 0
    a.add(12345)
    a.add(-12340)
    assert a.path.read_bytes().strip() == b"5"  # no stale digits from the longer number
    a.close()
    assert in_flight(tmp_path) == 0 and not a.path.exists()


def test_files_of_dead_workers_are_ignored_and_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = InflightCounter(tmp_path, pid=int(dead.stdout))
    stale.add(4)
    assert in_flight(tmp_path) == 0
    assert not stale.path.exists()


def test_drain_waits_for_the_last_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = InflightCounter(tmp_path)
    counter.add(1)
    counts: list[int] = []
    busy_seen = threading.Event()

    def watched(directory: Path) -> int:
        counts.append(in_flight(directory))
        if counts.count(1) >= 3:
            busy_seen.set()
        return counts[-1]

    monkeypatch.setattr(inflight, "in_flight", watched)
    drained: list[bool] = []
    drainer = threading.Thread(
        target=lambda: drained.append(drain(tmp_path, timeout=120, quiet=0.05, poll=0.01))
    )
    drainer.start()
    try:
        while drainer.is_alive() and not busy_seen.wait(timeout=0.05):
            pass  # until drain has seen the request in flight three times, or returned
        assert busy_seen.is_set(), counts
        assert drained == []  # drain saw the request in flight, three times, and kept waiting
    finally:
        counter.add(-1)  # the last request finishes
        drainer.join(timeout=120)
    assert drained == [True]
    assert counts[:3] == [1, 1, 1] and counts[-1] == 0


def test_drain_gives_up_at_its_timeout(tmp_path: Path) -> None:
    counter = InflightCounter(tmp_path)
    counter.add(1)
    assert drain(tmp_path, timeout=0.2, quiet=0.1) is False


def test_a_killed_workers_count_does_not_hold_a_drain(tmp_path: Path) -> None:
    """A worker SIGKILLed mid-request leaves its count behind, and may stay a zombie."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        counter = InflightCounter(tmp_path, pid=child.pid)
        counter.add(1)
        assert in_flight(tmp_path) == 1
        child.kill()
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            pass  # dead, not reaped: a zombie
        assert in_flight(tmp_path) == 0
        assert drain(tmp_path, timeout=5.0, quiet=0.0)
    finally:
        child.kill()
        child.wait()

"""Stopping server processes started by tests, with everything they started."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psutil


def stop_tree(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM ``process`` (scorer stops its model server), then SIGKILL what is left of its tree.

    MMS runs in its own session, so killing the parent's process group alone would leave it
    (and its workers) running.
    """
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` now (none if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def runs_java(processes: list[psutil.Process]) -> bool:
    """Whether one of ``processes`` is a JVM (the model server)."""
    found = False
    for process in processes:
        with contextlib.suppress(psutil.Error):
            found = found or "java" in " ".join(process.cmdline())
    return found


def still_running(processes: list[psutil.Process]) -> list[str]:
    """Those of ``processes`` still running (zombies waiting for their reaper count as gone)."""
    left = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
    return left


def assert_all_gone(processes: list[psutil.Process], within: float = 30.0) -> None:
    """Fail unless every one of ``processes`` ends within ``within`` s (a bound for the
    assertion, not a measured figure); whatever is left is killed either way."""
    deadline = time.monotonic() + within
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = still_running(processes)
    for process in processes:  # never leave them to the next test
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert left == []


ENTRYPOINT = Path(__file__).resolve().parents[2] / "entrypoint.py"


@contextlib.contextmanager
def serving_entrypoint(
    env: Mapping[str, str], log_path: Path, timeout: float = 120.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python entrypoint.py serve`` as the container runs it, on loopback, until /ping is 200.

    Yields the process and its base URL; the whole process tree is stopped on exit.
    """
    url = f"http://127.0.0.1:{env['SAGEMAKER_BIND_TO_PORT']}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), "serve", "--bind", "127.0.0.1"],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{url}/ping not healthy in {timeout}s"
            time.sleep(0.5)
        yield process, url
    finally:
        stop_tree(process)

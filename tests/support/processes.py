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

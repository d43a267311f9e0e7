"""Stopping server processes started by tests, with everything they started."""

from __future__ import annotations

import contextlib
import signal
import subprocess

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

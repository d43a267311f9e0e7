"""How much memory a large request body costs the server (#17: async bodies up to 1 GB).

``python -m bench.large_body [--mb 256]`` starts a single-model server that accepts bodies
that large (``SAGEMAKER_MAX_REQUEST_SIZE``), streams one body of random bytes to
``/invocations`` from a generator (the client never holds it), samples the resident memory
of MMS's Java process and of the model's worker every 10 ms, and prints each one's peak
above its level before the request, as a multiple of the body's size. The model refuses
the bytes (they are not an image): what is measured is the body's way in.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench import models
from bench.servers import model_server

_CHUNK = 1 << 20


def _chunks(megabytes: int) -> Iterator[bytes]:
    block = os.urandom(_CHUNK)
    for _ in range(megabytes):
        yield block


def _rss_by_role(server_pid: int) -> dict[str, int]:
    """RSS of the Java process and of the model worker(s) under ``server_pid``."""
    found = {"java": 0, "worker": 0}
    for process in psutil.Process(server_pid).children(recursive=True):
        try:
            cmdline = " ".join(process.cmdline())
            rss = process.memory_info().rss
        except psutil.Error:
            continue
        if "com.amazonaws.ml.mms.ModelServer" in cmdline:
            found["java"] += rss
        elif "model_service_worker" in cmdline:
            found["worker"] += rss
    return found


def measure(megabytes: int) -> dict[str, object]:
    """One request of ``megabytes`` MB; the peaks above the baseline, in MB and x body."""
    work = Path(tempfile.mkdtemp(prefix="scorer-large-body-"))
    archive = models.build_archive("mobilenet_v3_small", "model", work / "build")
    model_dir = models.extract(archive, work / "models", "model")
    server = model_server(
        work,
        {
            "SCORER_MODEL_DIR": str(model_dir),
            "SAGEMAKER_MAX_REQUEST_SIZE": str((megabytes + 16) << 20),
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600",
            "SCORER_EMF": "false",
        },
    )
    server.start(output=work / "mms.log")
    peaks = {"java": 0, "worker": 0}
    try:
        server.wait_ready(timeout=180)
        assert server.process is not None
        pid = server.process.pid
        baseline = _rss_by_role(pid)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for role, rss in _rss_by_role(pid).items():
                    peaks[role] = max(peaks[role], rss)
                done.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        with httpx.Client(timeout=600) as client:
            response = client.post(
                f"{server.url}/invocations",
                content=_chunks(megabytes),
                headers={"Content-Type": "application/octet-stream"},
            )
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        done.set()
        sampler.join()
    finally:
        server.stop(grace=10)
    body = megabytes << 20
    extra = {role: max(0, peaks[role] - baseline[role]) for role in peaks}
    return {
        "body_mb": megabytes,
        "status": response.status_code,
        "seconds": round(seconds, 2),
        "java_peak_extra_mb": round(extra["java"] / 2**20, 1),
        "java_x_body": round(extra["java"] / body, 2),
        "worker_peak_extra_mb": round(extra["worker"] / 2**20, 1),
        "worker_x_body": round(extra["worker"] / body, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.large_body", description=__doc__)
    parser.add_argument("--mb", type=int, default=256, help="body size in MiB")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.mb)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

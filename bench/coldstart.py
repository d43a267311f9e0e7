"""Cold start through the model cache: the first InvokeEndpoint for a model, broken down.

``python -m bench.coldstart`` builds a bare TorchScript resnet50 archive (seeded random
weights, scripted, ``model.pt`` packed by :func:`scorer.models.archive.pack_directory`:
about 94 MB of gzip), starts the local SageMaker Runtime emulator on a directory prefix
(the real Multi Model Server behind it, as ``scorer local`` does) and sends the first
request for the archive with boto3 (``TargetModel``), then a few warm ones. Each round asks
for the same archive under a new key (a hard link in the prefix), so every round is a cold
load (``max_models`` is above the round count: no eviction on the path, as on a fresh
endpoint; each round's worker stays, about 0.5 GB). The first round, sent as soon as
the emulator is up, is reported apart (``right_after_start``): it also waits for the worker
zygote to finish importing torch.

The breakdown of a first request comes from the cache's ``cache.load`` event (``phases_ms``:
fetch, extract (check and extract in one pass), make_room, register, measure) and the model
server's log (worker spawned and started, the worker's ``model_loaded`` ms, the first
inference's backend time). It prints JSON (``--out`` writes it too); no assertion on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import torch
import torchvision
from botocore.config import Config

from bench.inputs import creative, encode
from scorer.cache import CacheSettings, model_hash
from scorer.cache.events import LOAD, LOGGER_NAME
from scorer.cache.settings import parse_size
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory

ENDPOINT = "scorer-local"
_MMS_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}) ")
_BACKEND = re.compile(r"Backend response time: (\d+)")


def build_archive(out_dir: Path) -> Path:
    """``out_dir/resnet50-torchscript.tar.gz``: a bare scripted resnet50 (seed 0)."""
    staging = out_dir / "resnet50-torchscript.src"
    staging.mkdir(parents=True)
    torch.manual_seed(0)
    network = torchvision.models.resnet50(weights=None).eval()
    torch.jit.script(network).save(str(staging / "model.pt"))
    archive = out_dir / "resnet50-torchscript.tar.gz"
    pack_directory(staging, archive)
    shutil.rmtree(staging)
    return archive


class _LoadEvents(logging.Handler):
    """Collects the cache's ``cache.load`` events with the time they were logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loads: dict[str, tuple[float, dict[str, Any]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(ValueError, TypeError):
            event = json.loads(record.getMessage())
            if event.get("event") == LOAD:
                self.loads[event["model"]] = (record.created, event)


@contextlib.contextmanager
def _load_events() -> Iterator[_LoadEvents]:
    logger = logging.getLogger(LOGGER_NAME)
    handler = _LoadEvents()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _mms_lines(log: Path, name: str) -> list[tuple[float, str]]:
    """(epoch seconds, line) of the model server's log lines about model ``name``."""
    tag = name[:20]
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = _MMS_TIME.match(line)
        if match and tag in line:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S,%f")
            found.append((stamp.timestamp(), line))
    return found


def _worker_timeline(log: Path, name: str, registered_at: float) -> dict[str, float | None]:
    """The worker's side of a load, in ms, from the model server's log (1 ms resolution)."""
    spawned = started = loaded = None
    initialize_ms = first_backend_ms = None
    for stamp, line in _mms_lines(log, name):
        if spawned is None and "attachIOStreams()" in line:
            spawned = stamp
        elif started is None and "model_service_worker started" in line:
            started = stamp
        elif loaded is None and '"model_loaded"' in line:
            loaded = stamp
            initialize_ms = float(json.loads(line[line.index("{") :])["ms"])
        elif (
            loaded is not None
            and first_backend_ms is None
            and stamp > loaded + 0.005  # not the load's own reply
            and (m := _BACKEND.search(line))
        ):
            first_backend_ms = float(m.group(1))

    def ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1000, 1)

    return {
        "until_worker_spawned": ms(registered_at, spawned),
        "worker_process_start": ms(spawned, started),
        "worker_initialize": initialize_ms,
        "first_inference_backend": first_backend_ms,
    }


def _invoke(runtime: Any, key: str, body: bytes) -> float:
    started = time.perf_counter()
    response = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, TargetModel=key, ContentType="image/jpeg", Body=body
    )
    payload = json.loads(response["Body"].read())
    elapsed = time.perf_counter() - started
    if "scores" not in payload:
        raise RuntimeError(f"unexpected response for {key}: {payload}")
    return elapsed


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def run(rounds: int, warm: int, work: Path, max_memory: int | None = None) -> dict[str, Any]:
    prefix = work / "prefix"
    prefix.mkdir()
    built = time.perf_counter()
    archive = build_archive(work / "build")
    build_s = time.perf_counter() - built
    keys = [f"resnet50-{i}.tar.gz" for i in range(rounds + 1)]  # 0: right after start
    for key in keys:
        os.link(archive, prefix / key)
    body = encode(creative(1080, 1080, 1), "JPEG")
    settings = LocalSettings(
        port=0,
        cache=CacheSettings(
            model_prefix=str(prefix), max_models=len(keys), max_memory_bytes=max_memory
        ),
        run_dir=work / "run",
    )
    local = LocalEndpoint(settings)
    runs: list[dict[str, Any]] = []
    warm_s: list[float] = []
    with _load_events() as events, local.running() as url:
        assert local.model_server is not None
        mms_log = local.model_server.config.log_dir / "mms_log.log"
        runtime = boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
        )
        for key in keys:
            load_avg = os.getloadavg()[0]
            sent = time.time()
            first = _invoke(runtime, key, body)
            warm_s.extend(_invoke(runtime, key, body) for _ in range(warm))
            logged_at, event = events.loads[key]
            phases = event["phases_ms"]
            load_ms = float(event["ms"])
            load_started = logged_at - load_ms / 1000
            registered_at = (
                load_started + sum(phases[p] for p in ("fetch", "extract", "make_room")) / 1000
            )
            runs.append(
                {
                    "first_request_s": round(first, 3),
                    "load_average_1min": round(load_avg, 2),
                    "cache_ms": {
                        "before_load": round((load_started - sent) * 1000, 1),
                        **phases,
                        "load_total": load_ms,
                    },
                    "worker_ms": _worker_timeline(mms_log, model_hash(key), registered_at),
                    "after_load_ms": round((sent + first - logged_at) * 1000, 1),
                }
            )
    startup, runs = runs[0], runs[1:]
    first_s = [r["first_request_s"] for r in runs]
    breakdown: dict[str, dict[str, float | None]] = {}
    for part in ("cache_ms", "worker_ms"):
        names = runs[0][part].keys()
        breakdown[part] = {n: _median([r[part][n] for r in runs]) for n in names}
    breakdown["after_load_ms"] = {"median": _median([r["after_load_ms"] for r in runs])}
    return {
        "model": "resnet50, bare TorchScript (scripted, seeded random weights)",
        "archive_bytes": archive.stat().st_size,
        "archive_build_s": round(build_s, 1),
        "cpus": os.cpu_count(),
        "host_memory_budget_bytes": max_memory,
        "first_request_s": {
            "median": _median(list(first_s)),
            "min": min(first_s),
            "max": max(first_s),
            "runs": first_s,
        },
        "breakdown_median": breakdown,
        "warm_request_s": {"median": _median(list(warm_s)), "n": len(warm_s)},
        "runs": runs,
        "right_after_start": startup,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="cold starts (default 5)")
    parser.add_argument("--warm", type=int, default=5, help="warm requests after each")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--max-memory", help="a host memory budget (8G): the load then measures the worker"
    )
    args = parser.parse_args(argv)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    with tempfile.TemporaryDirectory(prefix="scorer-coldstart-") as tmp:
        results = run(args.rounds, args.warm, Path(tmp), max_memory)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

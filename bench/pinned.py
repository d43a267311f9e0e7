"""scorer's serving path with the load generator on a core of its own (#20's concurrency-8
target, where the main bench's client shares the machine's cores with the server).

``python -m bench.pinned [--models mobilenet_v3_small resnet50] [--concurrency 8 16]``
needs at least 2 CPUs. It runs everything of the server on CPU 0 and the client on CPU 1:

* ``limit-b<N>`` (CPU 0): the worker's batched path in this process (decode, one forward
  pass of N requests, JSON), with one thread: the batched limit of one core;
* ``scorer`` (server on CPU 0, client on CPU 1): the real MMS through scorer, multi-model,
  the model registered with ``{"model_name", "url"}`` only (the server's batching defaults,
  as SageMaker registers it); MMS's Java frontend and the worker share CPU 0, as they share
  an instance's cores; the client's threads run on CPU 1.

It prints requests per second, p50/p99, the server's CPU share (of the whole machine: 50 %
is all of CPU 0) and the requests per forward pass the server ran (``scorer_batch_size``,
warm-up included), then ``scorer`` at each concurrency over the best ``limit-b<N>``,
measured in the same run, as JSON lines. ``--max-delay-ms`` sets the server's batching
delay (``SCORER_MAX_BATCH_DELAY_MS``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import models
from bench.inputs import payloads
from bench.load import batched_in_process, http_load, json_request
from bench.servers import model_server
from scorer import config as cfg
from scorer.modelserver.process import ModelServer

SERVER_CPU = 0
CLIENT_CPU = 1


def _batch_size_totals(server: ModelServer) -> tuple[float, float]:
    """``scorer_batch_size``'s sum and count for the model: requests and forward passes."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    totals = {"scorer_batch_size_sum": 0.0, "scorer_batch_size_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("model") == "m":
                totals[sample.name] = sample.value
    return totals["scorer_batch_size_sum"], totals["scorer_batch_size_count"]


def measure(
    work: Path,
    backbone: str,
    concurrency: list[int],
    batches: list[int],
    duration: float,
    warmup: float,
    delay_ms: int | None = None,
) -> list[dict[str, Any]]:
    """The one-core batched limits, then the pinned server at each concurrency (with
    ``delay_ms`` as the server's batching delay when given), with its files under ``work``."""
    root = work / "models"
    model_dir = models.extract(models.build_archive(backbone, "model", work / "build"), root, "m")
    payload = payloads()["jpeg1080"]
    rows: list[dict[str, Any]] = []
    os.sched_setaffinity(0, {SERVER_CPU})  # this thread and what it starts from now on
    chain = models.serving_chain(model_dir, 1)
    request = json_request(payload.body, payload.content_type)
    for batch in batches:
        m = batched_in_process(
            f"limit-b{batch}", chain, request, batch, duration, warmup, payload.images
        )
        rows.append({"model": backbone, "stack": f"limit-b{batch}", **m.to_dict()})
    settings = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(root)}
    if delay_ms is not None:
        settings[cfg.MAX_BATCH_DELAY_MS] = str(delay_ms)
    server = model_server(work, settings)
    metrics = server.start_metrics_server()  # on CPU 0 too, with the server
    server.start(output=work / "mms.log")  # inherits CPU 0
    try:
        server.wait_ready(timeout=120)
        assert server.process is not None
        os.sched_setaffinity(0, {CLIENT_CPU})  # the client's threads start from here
        answer = httpx.post(
            f"{server.url}/models", json={"model_name": "m", "url": str(model_dir)}, timeout=300
        )
        answer.raise_for_status()
        for c in concurrency:
            requests, forwards = _batch_size_totals(server)
            m = http_load(
                "scorer", f"{server.url}/models/m/invoke", payload.body, payload.content_type,
                c, duration, warmup, payload.images, [server.process.pid],
            )  # fmt: skip
            after = _batch_size_totals(server)
            per_forward = (after[0] - requests) / max(1.0, after[1] - forwards)
            rows.append(
                {"model": backbone, "stack": "scorer", "delay_ms": delay_ms,
                 "requests_per_forward": round(per_forward, 2), **m.to_dict()}
            )  # fmt: skip
    finally:
        server.stop(grace=10)
        if metrics is not None:
            metrics.close()
        os.sched_setaffinity(0, {SERVER_CPU, CLIENT_CPU})
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``scorer`` at each concurrency over the best one-core batched limit, per model."""
    out: dict[str, float] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        limit = max(r["rps"] for r in rows if r["model"] == model and r["stack"] != "scorer")
        for row in rows:
            if row["model"] == model and row["stack"] == "scorer" and limit:
                out[f"{model}_c{row['concurrency']}_vs_limit"] = round(row["rps"] / limit, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print the rows, then the ratios, as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.pinned", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet50"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--max-delay-ms", type=int, help="the server's batching delay [scorer's default]"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the archives and the server's log here [a temporary folder]"
    )
    args = parser.parse_args(argv)
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        parser.error(f"needs CPUs {SERVER_CPU} and {CLIENT_CPU}")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rows: list[dict[str, Any]] = []
        for backbone in args.models:
            rows += measure(
                work / backbone, backbone, args.concurrency, args.batches, args.duration,
                args.warmup, args.max_delay_ms,
            )  # fmt: skip
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"ratios": ratios(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Batching on a single-model endpoint (#20: cross-request batching in every mode).

``python -m bench.single_model [--models mobilenet_v3_small resnet50] [--concurrency 8 16]``
starts a single-model server (MMS with the model in ``load_models``, as SageMaker runs a
real-time endpoint) twice per model: with scorer's batching (``SCORER_MAX_BATCH_SIZE=8``, the
default) and without (``=1``, what MMS gives a startup model by itself), drives
``/invocations`` with 1080x1080 JPEGs at each concurrency, and prints requests per second,
p50/p99 and the ratio on / off measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import models
from bench.inputs import payloads
from bench.load import http_load, tree_rss
from bench.servers import model_server
from scorer.modelserver.process import ModelServer


def _serve(model_dir: Path, work: Path, batch_size: int) -> ModelServer:
    server = model_server(
        work,
        {
            "SAGEMAKER_MULTI_MODEL": "false",
            "SCORER_MODEL_DIR": str(model_dir),
            "SCORER_MAX_BATCH_SIZE": str(batch_size),
            "SCORER_EMF": "false",
            "SCORER_LOG_FORMAT": "json",
        },
    )
    server.start(output=work / "mms.log")
    return server


def measure(
    backbone: str, concurrency: list[int], duration: float, warmup: float
) -> list[dict[str, Any]]:
    """Each concurrency with batching on and off, for one model."""
    work = Path(tempfile.mkdtemp(prefix="scorer-single-model-"))
    archive = models.build_archive(backbone, "model", work / "build")
    model_dir = models.extract(archive, work / "models", "model")
    payload = payloads()["jpeg1080"]
    rows: list[dict[str, Any]] = []
    for label, batch_size in (("batching_on", 8), ("batching_off", 1)):
        server = _serve(model_dir, work / label, batch_size)
        try:
            server.wait_ready(timeout=300)
            assert server.process is not None
            for c in concurrency:
                m = http_load(
                    label, f"{server.url}/invocations", payload.body, payload.content_type,
                    c, duration, warmup, payload.images, [server.process.pid],
                )  # fmt: skip
                rss_mb = tree_rss(server.process.pid) >> 20
                rows.append({"model": backbone, "stack": label, "rss_mb": rss_mb, **m.to_dict()})
        finally:
            server.stop(grace=10)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """requests/s with batching on over off, per model and concurrency."""
    by_key = {(r["model"], r["stack"], r["concurrency"]): r for r in rows}
    out: dict[str, float] = {}
    for (model, stack, c), row in by_key.items():
        off = by_key.get((model, "batching_off", c))
        if stack == "batching_on" and off and off["rps"]:
            out[f"{model}_c{c}_on_vs_off"] = round(row["rps"] / off["rps"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print the rows, then the ratios, as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.single_model", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet50"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    rows = [
        row
        for backbone in args.models
        for row in measure(backbone, args.concurrency, args.duration, args.warmup)
    ]
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"ratios": ratios(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode / forward overlap inside one MMS batch (#20 item 3), measured before it is built.

``python -m bench.overlap [--model mobilenet_v3_small] [--batch 8] [--reps 60]``: one worker's
budget of 2 threads (the 2-core machine), the forward at 1 torch thread (what the worker's
probe chooses for mobilenet_v3_small, so a core is spare while it runs). It times, per batch
of 1080x1080 JPEG requests, median of ``--reps``:

* ``serial``: the worker's path today (:class:`scorer.inference.batching.Batcher`): decode
  every request on the image pool's 2 threads, then one forward pass;
* ``overlap<k>``: the requests decoded in order on the spare thread while the batch's
  first chunks go through the forward pass, ``k`` chunks (the overlap a worker can have:
  MMS sends a worker its next batch only after the answer to this one);
* ``decode`` (1 thread) and ``forward`` (the whole batch) alone, for the arithmetic.

It prints one JSON line per figure and the ratios ``overlap<k> / serial`` (below 1: the
overlap pays).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import models
from bench.inputs import payloads
from scorer.inference.batching import Batcher, BatchRequest, merge, split
from scorer.inference.context import RequestContext


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def measure(backbone: str, batch: int, reps: int) -> dict[str, Any]:
    """The figures above for one model and batch size."""
    work = Path(tempfile.mkdtemp(prefix="scorer-overlap-"))
    model_dir = models.extract(models.build_archive(backbone, "m", work / "b"), work / "m", "m")
    chain = models.serving_chain(model_dir, 2)
    torch.set_num_threads(1)
    body = payloads()["jpeg1080"].body
    requests = [
        BatchRequest(body, RequestContext(model_name="m", content_type="image/jpeg"))
        for _ in range(batch)
    ]
    batcher = Batcher(chain)
    spare = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spare-decoder")
    merged = merge([chain.decode(r.body, r.context) for r in requests])[0]

    def overlapped(chunks: int) -> None:
        decoding = [spare.submit(chain.decode, r.body, r.context) for r in requests]
        size = -(-batch // chunks)
        for start in range(0, batch, size):
            images, slices = merge([f.result() for f in decoding[start : start + size]])
            split(chain.predict_fn(images, chain.model), slices)

    figures = {
        "serial": _median_ms(lambda: batcher.run(requests), reps),
        "overlap2": _median_ms(lambda: overlapped(2), reps),
        "overlap4": _median_ms(lambda: overlapped(4), reps),
        "decode_1_thread": _median_ms(
            lambda: [chain.decode(r.body, r.context) for r in requests], reps
        ),
        "forward": _median_ms(lambda: chain.predict_fn(merged, chain.model), reps),
    }
    spare.shutdown()
    chain.defaults.pool.close()
    return {
        "model": backbone,
        "batch": batch,
        "ms": figures,
        "ratios": {
            f"{k}_vs_serial": round(figures[k] / figures["serial"], 3)
            for k in ("overlap2", "overlap4")
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.overlap", description=__doc__)
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=60)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.batch, args.reps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

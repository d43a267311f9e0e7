"""Run the whole benchmark in one process tree and print ratios measured in the same run.

``python -m bench`` (full, a few minutes on 2 cores) or ``python -m bench --smoke``
(seconds; what CI runs, no timing assertions). Results go to ``bench/results/latest.json``.

Stacks: ``limit`` (the chain in this process, one request per call), ``limit-b<N>`` (the
worker's batched path, :class:`~scorer.inference.batching.Batcher`, N requests per forward
pass: the batched in-process limit), ``scorer`` (over HTTP with the server's batching
defaults, as SageMaker registers a model), ``scorer-b1`` (over HTTP, the same model
registered with ``batch_size`` 1: batching off), ``reference`` (the toolkit-style handler).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench import inputs, models
from bench.load import (
    Measurement,
    PingProbe,
    batched_in_process,
    call_overhead_us,
    http_load,
    idle_tree_rss,
    in_process,
    json_request,
)
from bench.servers import model_server
from scorer.cpus import cpu_count
from scorer.inference.chain import Chain
from scorer.serving.bounded import BoundedRunner

RESULTS_DIR = Path(__file__).with_name("results")


class Bench:
    """One benchmark run: a model server, the archives, and the measurements."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.models_root = workdir / "models"
        self.models_root.mkdir(parents=True)
        self.payloads = inputs.payloads()
        self.results: dict[str, Any] = {
            "machine": {
                "cpus": cpu_count(),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "cuda": torch.cuda.is_available(),
            },
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "cycles": args.cycles,
            },
            "runs": [],
            "ping": {},
            "metrics_cost": {},
            "load": {},
            "ratios": {},
        }
        self.server = model_server(
            workdir, {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(self.models_root)}
        )
        self.client = httpx.Client(base_url=self.server.url, timeout=300)

    def record(self, backbone: str, stack: str, payload: str, m: Measurement) -> None:
        row = {"model": backbone, "stack": stack, "input": payload, **m.to_dict()}
        self.results["runs"].append(row)
        print(
            f"{backbone:<20}{stack:<10}{payload:<15}c={m.concurrency:<3}"
            f"{m.rps:>8.1f} req/s {m.images_per_s:>8.1f} img/s  p50 {m.p50_ms:>7.1f}  "
            f"p95 {m.p95_ms:>7.1f}  p99 {m.p99_ms:>7.1f} ms  cpu {m.cpu_percent:>5.1f}%"
            f"{'  errors ' + str(m.errors) if m.errors else ''}",
            flush=True,
        )

    def register(self, name: str, path: Path, **extra: object) -> float:
        started = time.perf_counter()
        body = {"model_name": name, "url": str(path), **extra}
        response = self.client.post("/models", json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"loading {name} failed: {response.status_code} {response.text}")
        return elapsed

    def unregister(self, name: str) -> None:
        response = self.client.delete(f"/models/{name}")
        if response.status_code != 200:
            raise RuntimeError(f"unloading {name} failed: {response.status_code}")

    def http(
        self,
        backbone: str,
        stack: str,
        name: str,
        payload: str,
        concurrency: int,
        probe_ping: bool = False,
    ) -> None:
        p = self.payloads[payload]
        assert self.server.process is not None
        probe = PingProbe(f"{self.server.url}/ping")
        with probe if probe_ping else contextlib.nullcontext():
            m = http_load(
                f"{stack}:{payload}",
                f"{self.server.url}/models/{name}/invoke",
                p.body,
                p.content_type,
                concurrency,
                self.args.duration,
                self.args.warmup,
                p.images,
                [self.server.process.pid],
            )
        self.record(backbone, stack, payload, m)
        if probe_ping:
            summary = {"concurrency": concurrency, **probe.summary()}
            self.results["ping"][f"{backbone} under load"] = summary
            print(f"{backbone:<20}GET /ping under load (c={concurrency}): {summary}", flush=True)

    def metrics_cost(self, backbone: str, name: str, payload: str = "jpeg1080") -> None:
        """What ``GET /metrics`` costs: the same load (concurrency 4) with ``/ping`` probed,
        once alone and once with ``/metrics`` scraped every 100 ms (100 times Prometheus's
        usual 10 s)."""
        p = self.payloads[payload]
        assert self.server.process is not None
        concurrency = min(4, max(self.args.concurrency))
        runs: dict[str, Any] = {}
        for scraped in (False, True):
            ping = PingProbe(f"{self.server.url}/ping")
            scraper = PingProbe(f"{self.server.url}/metrics", interval=0.1)
            with ping, scraper if scraped else contextlib.nullcontext():
                m = http_load(
                    f"metrics-cost:{payload}", f"{self.server.url}/models/{name}/invoke",
                    p.body, p.content_type, concurrency, self.args.duration, self.args.warmup,
                    p.images, [self.server.process.pid],
                )  # fmt: skip
            run: dict[str, Any] = {"rps": m.rps, "p99_ms": m.p99_ms, "ping": ping.summary()}
            if scraped:
                run["metrics"] = scraper.summary()
            runs["scraped" if scraped else "alone"] = run
        runs["rps_ratio"] = round(runs["scraped"]["rps"] / runs["alone"]["rps"], 3)
        self.results["metrics_cost"][backbone] = {"concurrency": concurrency, **runs}
        print(f"{backbone:<20}/metrics every 100 ms under load (c={concurrency}): {runs}",
              flush=True)  # fmt: skip

    def ping_idle(self) -> None:
        with PingProbe(f"{self.server.url}/ping", interval=0.01) as probe:
            time.sleep(1.0 if not self.args.smoke else 0.2)
        self.results["ping"]["idle"] = probe.summary()
        runner = BoundedRunner()
        hop = call_overhead_us(lambda fn: runner.run(fn, 60.0))
        self.results["ping"]["request_deadline_hop_us"] = hop
        print(f"GET /ping idle: {probe.summary()}; per-request deadline hop: {hop} us",
              flush=True)  # fmt: skip

    def _chain(self, model_dir: Path) -> Chain:
        return models.serving_chain(model_dir, cpu_count())  # the worker's budget

    def limit(self, backbone: str, model_dir: Path, payload: str) -> None:
        chain = self._chain(model_dir)
        p = self.payloads[payload]
        ctx = json_request(p.body, p.content_type).context
        m = in_process(
            f"limit:{payload}",
            lambda: chain.transform(p.body, ctx),
            self.args.duration,
            self.args.warmup,
            p.images,
        )
        self.record(backbone, "limit", payload, m)

    def limit_batched(self, backbone: str, model_dir: Path, payload: str, batch: int) -> None:
        """The worker's batched path in this process: ``batch`` requests decoded on the
        image pool and scored in one forward pass per call (latencies are per call)."""
        p = self.payloads[payload]
        m = batched_in_process(
            f"limit-b{batch}:{payload}", self._chain(model_dir),
            json_request(p.body, p.content_type), batch, self.args.duration,
            self.args.warmup, p.images,
        )  # fmt: skip
        self.record(backbone, f"limit-b{batch}", payload, m)

    def run(self) -> dict[str, Any]:
        metrics = self.server.start_metrics_server()  # what MMS's /metrics plugin serves
        self.server.start(output=self.workdir / "mms.log")
        try:
            self.server.wait_ready(timeout=120)
            self.ping_idle()
            for backbone in self.args.models:
                self.run_model(backbone)
            self.load_cycles(self.args.models[0])
        finally:
            self.client.close()
            self.server.stop(grace=10)
            if metrics is not None:
                metrics.close()
        self.results["ratios"] = ratios(self.results)
        return self.results

    def run_model(self, backbone: str) -> None:
        build = self.workdir / "build"
        build.mkdir(exist_ok=True)
        ours = f"{backbone}-scorer"
        ref = f"{backbone}-reference"
        ours_dir = models.extract(
            models.build_archive(backbone, ours, build), self.models_root, ours
        )
        ref_dir = models.extract(
            models.build_archive(backbone, ref, build, reference=True), self.models_root, ref
        )
        load_times = []
        for _ in range(self.args.load_reps):
            load_times.append(self.register(ours, ours_dir))
            self.unregister(ours)
        self.results["load"][backbone] = {
            "post_models_to_ready_s": [round(t, 3) for t in load_times],
            "best_s": round(min(load_times), 3),
            "archive_bytes": (build / f"{ours}.tar.gz").stat().st_size,
        }
        print(f"{backbone:<20}POST /models -> ready: {min(load_times):.2f} s (best of "
              f"{len(load_times)})", flush=True)  # fmt: skip
        unbatched = f"{backbone}-scorer-b1"
        self.register(ours, ours_dir)  # as SageMaker does: the server's batching defaults
        self.register(unbatched, ours_dir, batch_size=1)  # batching off
        self.register(ref, ref_dir)
        for payload in self.payloads:
            self.limit(backbone, ours_dir, payload)
        for batch in self.args.batch_sizes:
            self.limit_batched(backbone, ours_dir, "jpeg1080", batch)
        saturation = max(self.args.concurrency)
        for concurrency in self.args.concurrency:
            self.http(backbone, "scorer", ours, "jpeg1080", concurrency, concurrency == saturation)
        # batching on against off, at every concurrency of 8 and more (the top one at least)
        for concurrency in [c for c in self.args.concurrency if c >= 8] or [saturation]:
            self.http(backbone, "scorer-b1", unbatched, "jpeg1080", concurrency)
        for payload in self.payloads:
            if payload != "jpeg1080":
                self.http(backbone, "scorer", ours, payload, saturation)
        self.metrics_cost(backbone, ours)
        for concurrency in sorted({1, saturation}):
            self.http(backbone, "reference", ref, "jpeg1080", concurrency)
        for name in (ours, unbatched, ref):
            self.unregister(name)

    def load_cycles(self, backbone: str) -> None:
        name = f"{backbone}-scorer"
        path = self.models_root / name / "model"
        assert self.server.process is not None
        pid = self.server.process.pid
        self.register(name, path)
        self.unregister(name)
        first = idle_tree_rss(pid)
        for _ in range(self.args.cycles - 1):
            self.register(name, path)
            self.unregister(name)
        last = idle_tree_rss(pid)
        self.results["load"]["cycles"] = {
            "model": backbone,
            "cycles": self.args.cycles,
            "rss_after_first_mb": round(first / 1e6, 1),
            "rss_after_last_mb": round(last / 1e6, 1),
            "ratio": round(last / first, 3),
        }
        print(
            f"RSS after {self.args.cycles} load/unload cycles: {last / 1e6:.0f} MB vs "
            f"{first / 1e6:.0f} MB after the first ({last / first:.3f}x)",
            flush=True,
        )


def _best(runs: list[dict[str, Any]], model: str, stack: str, payload: str) -> dict[str, Any]:
    rows = [
        r for r in runs if r["model"] == model and r["stack"] == stack and r["input"] == payload
    ]
    return max(rows, key=lambda r: r["rps"]) if rows else {}


def _at(runs: list[dict[str, Any]], model: str, stack: str, concurrency: int) -> dict[str, Any]:
    """The jpeg1080 row of ``stack`` at ``concurrency``, or {}."""
    return next(
        (r for r in runs if r["model"] == model and r["stack"] == stack
         and r["input"] == "jpeg1080" and r["concurrency"] == concurrency),
        {},
    )  # fmt: skip


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as ratios of measurements from this run."""
    out: dict[str, Any] = {}
    runs = results["runs"]
    for model in {r["model"] for r in runs}:
        limit = _best(runs, model, "limit", "jpeg1080")
        ours = _best(runs, model, "scorer", "jpeg1080")
        ref = _best(runs, model, "reference", "jpeg1080")
        c1 = _at(runs, model, "scorer", 1)
        batched = max(
            (r for r in runs if r["model"] == model and r["stack"].startswith("limit-b")
             and r["input"] == "jpeg1080"),
            key=lambda r: r["rps"],
            default={},
        )  # fmt: skip
        entry: dict[str, Any] = {}
        if limit and ours:
            entry["http_vs_limit_throughput"] = round(ours["rps"] / limit["rps"], 3)
        if batched:
            entry["batched_limit"] = batched["stack"]
            if limit:
                entry["batched_limit_vs_limit"] = round(batched["rps"] / limit["rps"], 3)
            for concurrency in (8, 16):
                row = _at(runs, model, "scorer", concurrency)
                if row:  # target: >= 0.8
                    entry[f"http_c{concurrency}_vs_batched_limit"] = round(
                        row["rps"] / batched["rps"], 3
                    )
        for concurrency in sorted({r["concurrency"] for r in runs if r["stack"] == "scorer-b1"}):
            on, off = _at(runs, model, "scorer", concurrency), _at(runs, model, "scorer-b1",
                                                                   concurrency)  # fmt: skip
            if on and off:
                entry[f"batching_on_vs_off_c{concurrency}"] = round(on["rps"] / off["rps"], 3)
        if c1 and c1["requests"]:  # target: <= 1.5
            entry["p99_over_p50_c1"] = round(c1["p99_ms"] / c1["p50_ms"], 3)
        if ours and ref:
            entry["scorer_vs_reference_throughput"] = round(ours["rps"] / ref["rps"], 3)
        if c1 and limit:
            entry["p99_c1_minus_limit_p99_ms"] = round(c1["p99_ms"] - limit["p99_ms"], 2)
        for payload in ("jpeg1920x1080", "png300x250", "json_batch8"):
            lim = _best(runs, model, "limit", payload)
            http = _best(runs, model, "scorer", payload)
            if lim and http:
                entry[f"http_vs_limit_{payload}"] = round(http["rps"] / lim["rps"], 3)
        out[model] = entry
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[8, 16],
        help="requests per forward pass for the batched in-process limit",
    )  # fmt: skip
    parser.add_argument("--cycles", type=int, default=100, help="load/unload cycles for RSS")
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(models.BACKBONES))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.cycles, args.load_reps = 0.5, 0.2, 2, 1
        args.concurrency = [1, 2]
        args.batch_sizes = [2]
        args.models = ["mobilenet_v3_small"]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and ratios, write the JSON."""
    args = parse(argv)
    workdir = Path(tempfile.mkdtemp(prefix="scorer-bench-"))
    try:
        results = Bench(args, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nratios (same run):")
    print(json.dumps(results["ratios"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0

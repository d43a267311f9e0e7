"""Sustained load with churn: many requests over several models while models are loaded and
unloaded at random. Checks that nothing unexpected fails, every response comes from the
model that was asked, and memory stays bounded.

It drives the container's self-managed multi-model mode (``entrypoint.py serve`` with a
model prefix): the resident limit is below the model count and requests pick models at
random, so the cache keeps loading and evicting models under load, as SageMaker does.

``python -m bench.soak`` (long: 10,000 requests at concurrency 16 over 5 models) or
``python -m bench.soak --short`` (what CI runs). Writes ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.inputs import creative, encode
from bench.load import tree_rss
from scorer.models.archive import pack_directory
from scorer.modelserver.ports import free_loopback_port

RESULTS = Path(__file__).with_name("results") / "soak.json"
ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint.py"


@dataclass
class Tally:
    """What happened, counted under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    mismatched: int = 0
    sent: int = 0

    def add(self, key: str, problem: str | None = None) -> None:
        with self.lock:
            self.statuses[key] += 1
            if problem is not None and len(self.unexpected) < 50:
                self.unexpected.append(problem)


def build_models(root: Path, count: int) -> dict[str, Path]:
    """``count`` small creative scorers packed as archives under ``root/archives``."""
    import torch
    from safetensors.torch import save_file

    from scorer.models.family import build_network
    from scorer.models.spec import ModelSpec

    models = {}
    for index in range(count):
        name = f"soak-{index}"
        src = root / "src" / name
        src.mkdir(parents=True)
        spec = ModelSpec.from_dict(
            {
                "name": name,
                "version": str(index),
                "architecture": "creative_cnn",
                "input": {"size": 64, "resize": 72},
                "heads": [{"name": "appeal"}],
            }
        )
        torch.manual_seed(index)
        save_file(build_network(spec).state_dict(), str(src / spec.weights))
        (src / "spec.json").write_text(spec.to_json())
        archive = root / "archives" / f"{name}.tar.gz"
        archive.parent.mkdir(exist_ok=True)
        pack_directory(src, archive)
        models[name] = archive
    return models


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="scorer-soak-"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _start_endpoint(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_loopback_port()
    env = {
        **os.environ,
        "SCORER_MODEL_PREFIX": str(work / "archives"),
        "SCORER_CACHE_DIR": str(work / "cache"),
        "SCORER_CACHE_MAX_MODELS": str(args.models - args.churn),
        "SCORER_RUN_DIR": str(work / "run"),
        "SCORER_THREADS_PER_WORKER": "1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
    }
    env.pop("SAGEMAKER_MULTI_MODEL", None)
    log = open(work / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "serve", "--bind", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the endpoint did not become healthy")


def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    models = build_models(work, args.models)
    names = sorted(models)
    hot = names[: args.models - args.churn]
    tally = Tally()
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    images = [encode(creative(480, 480, seed), "JPEG") for seed in range(8)]
    process, url = _start_endpoint(args, work)
    started = time.monotonic()
    try:

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=120) as http:
                while True:
                    with tally.lock:
                        if tally.sent >= args.requests:
                            return
                        tally.sent += 1
                    # most traffic on the hot models; the rest forces loads and evictions
                    name = rng.choice(hot) if rng.random() < args.hot_share else rng.choice(names)
                    try:
                        response = http.post(
                            "/invocations",
                            content=rng.choice(images),
                            headers={
                                "Content-Type": "image/jpeg",
                                "X-Amzn-SageMaker-Custom-Attributes": f"target_model={name}.tar.gz",
                            },
                        )
                    except httpx.HTTPError as exc:
                        tally.add("transport_error", f"{name}: {exc!r}")
                        continue
                    if response.status_code != 200:
                        tally.add(
                            str(response.status_code),
                            f"{name}: {response.status_code} {response.text[:200]}",
                        )
                    elif response.json().get("model") != name:
                        with tally.lock:
                            tally.mismatched += 1
                        tally.add("mismatch", f"asked {name}, got {response.json().get('model')}")
                    else:
                        tally.add("200")

        def sample() -> None:
            while not stop.wait(1.0):
                rss.append((round(time.monotonic() - started, 1), tree_rss(process.pid)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
        sampler = threading.Thread(target=sample, daemon=True)
        for thread in [sampler, *threads]:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        sampler.join(timeout=10)
        cache = httpx.get(f"{url}/metrics.json", timeout=10).json()
    finally:
        stop.set()
        stop_process_tree(process)
    seconds = time.monotonic() - started
    quarter = max(1, len(rss) // 4)
    early = max((value for _, value in rss[:quarter]), default=0)
    late = max((value for _, value in rss[-quarter:]), default=0)
    return {
        "requests": tally.sent,
        "concurrency": args.concurrency,
        "models": args.models,
        "resident_limit": args.models - args.churn,
        "seconds": round(seconds, 1),
        "requests_per_s": round(tally.sent / seconds, 1),
        "statuses": dict(tally.statuses),
        "mismatched": tally.mismatched,
        "unexpected": tally.unexpected,
        "cache": cache,
        "rss_mb_samples": [(t, round(v / 1e6, 1)) for t, v in rss],
        "rss_mb_max_first_quarter": round(early / 1e6, 1),
        "rss_mb_max_last_quarter": round(late / 1e6, 1),
    }


def stop_process_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the endpoint (it stops its model server), SIGKILL anything left."""
    tree = []
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--short", action="store_true", help="a CI-sized run")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument(
        "--churn", type=int, default=2, help="models beyond the resident limit (forces evictions)"
    )
    parser.add_argument("--hot-share", type=float, default=0.8, help="traffic on resident models")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.short:  # CI: a few hundred requests, still with loads and evictions under load
        args.requests, args.models, args.churn, args.concurrency = 300, 3, 1, 8
        args.hot_share = 0.9
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit 1 if anything unexpected happened."""
    args = parse(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "rss_mb_samples"}
    print(json.dumps(summary, indent=2))
    ok = not result["unexpected"] and result["mismatched"] == 0
    print("soak:", "OK" if ok else "UNEXPECTED ERRORS", f"(wrote {args.out})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

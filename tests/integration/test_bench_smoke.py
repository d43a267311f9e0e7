"""The benchmark harness's smoke mode runs end to end (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import main

pytestmark = pytest.mark.integration


def test_bench_smoke_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    stacks = {(r["stack"], r["input"]) for r in results["runs"]}
    assert ("limit", "jpeg1080") in stacks
    assert ("scorer", "json_batch8") in stacks
    assert ("reference", "jpeg1080") in stacks
    assert ("limit-b2", "jpeg1080") in stacks  # the batched in-process limit
    assert ("scorer-b1", "jpeg1080") in stacks  # batching off, beside the default
    assert all(r["errors"] == 0 for r in results["runs"])
    assert results["load"]["mobilenet_v3_small"]["best_s"] > 0
    assert results["load"]["cycles"]["cycles"] == 2
    ratios = results["ratios"]["mobilenet_v3_small"]
    assert "http_vs_limit_throughput" in ratios
    assert ratios["batched_limit"] == "limit-b2" and ratios["batching_on_vs_off_c2"] > 0
    # absent only when no request finished in the smoke run's half second at concurrency 1
    assert ratios.get("p99_over_p50_c1", 1.0) >= 1.0
    assert results["ping"]["idle"]["n"] > 0 and results["ping"]["idle"]["not_200"] == 0
    under_load = results["ping"]["mobilenet_v3_small under load"]
    assert under_load["n"] > 0 and under_load["not_200"] == 0
    assert isinstance(results["ping"]["request_deadline_hop_us"], float)
    cost = results["metrics_cost"]["mobilenet_v3_small"]
    assert cost["scraped"]["metrics"]["n"] > 0 and cost["scraped"]["metrics"]["not_200"] == 0
    assert cost["alone"]["ping"]["not_200"] == cost["scraped"]["ping"]["not_200"] == 0
    assert cost["rps_ratio"] > 0

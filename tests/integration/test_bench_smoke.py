"""The benchmark harness's smoke mode runs end to end (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pinned
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


def test_the_pinned_bench_runs_and_counts_requests_per_forward_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--models", "mobilenet_v3_small", "--concurrency", "4", "--batches", "2",
            "--duration", "1", "--warmup", "0.3", "--work", str(tmp_path)]  # fmt: skip
    assert pinned.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows, summary = lines[:-1], lines[-1]
    assert [(r["stack"], r["concurrency"]) for r in rows] == [("limit-b2", 1), ("scorer", 4)]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows)
    assert 1.0 <= rows[1]["requests_per_forward"] <= 8.0  # read from scorer_batch_size
    assert summary["ratios"]["mobilenet_v3_small_c4_vs_limit"] > 0
    assert (tmp_path / "mobilenet_v3_small" / "mms.log").is_file()

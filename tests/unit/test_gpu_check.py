"""scripts/gpu-check --dry-run: the GPU check's code paths on the CPU, and its JSON.

The dry run is run once, in its own process (it sets torch's thread count and loads models
through the real handler), without the ``server`` section, which starts Multi Model Server
(``tests/integration/test_gpu_check.py`` runs that one).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import device_memory, gpu_check
from bench.gpu_workbench import Check

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu-check.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu_check",
            "--dry-run",
            "--skip",
            "server",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "dry run on the CPU: 7 of 7 sections passed" in done.stdout
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def test_the_dry_run_reports_every_section_as_taken_on_the_cpu(dry_run: dict[str, Any]) -> None:
    assert dry_run["schema"] == "scorer.gpu-check/v1"
    assert dry_run["dry_run"] is True
    assert dry_run["machine"]["device"] == "cpu"
    assert list(dry_run["checks"]) == list(gpu_check.SECTIONS)
    statuses = {name: check["status"] for name, check in dry_run["checks"].items()}
    assert statuses == {**{name: "ok" for name in gpu_check.SECTIONS}, "server": "skipped"}
    assert {check["on"] for check in dry_run["checks"].values()} == {"cpu"}
    assert dry_run["failed"] == []
    assert {row["check"] for row in dry_run["table"]} == set(gpu_check.SECTIONS) - {"server"}


def test_placement_on_a_host_without_cuda(dry_run: dict[str, Any]) -> None:
    placement = dry_run["checks"]["placement"]
    assert placement["selected"] == "cpu"
    assert "SCORER_DEVICE=cuda but CUDA is not available" in placement["cuda_without_gpu"]
    assert placement["models_on"] == {"mobilenet_v3_small": "cpu", "resnet18": "cpu"}


def test_decode_compares_the_device_path_with_pil(dry_run: dict[str, Any]) -> None:
    decode = dry_run["checks"]["decode"]
    assert decode["worker_choice"] == "pil"  # a CPU worker keeps the PIL path
    assert "stands in for nvJPEG" in decode["note"]
    assert decode["images"] == 4
    for key in ("pil_decode", "device_decode", "pil_path", "device_path"):
        assert decode[f"{key}_ms_per_image"] > 0
    assert 0 < decode["input_mean_abs_diff"] < 0.1
    assert 0 <= decode["score_max_abs_diff"] < 0.05


def test_half_precision_differs_from_float32_by_a_little(dry_run: dict[str, Any]) -> None:
    precision = dry_run["checks"]["precision"]
    assert set(precision["models"]) == {"mobilenet_v3_small", "resnet18"}
    for figures in precision["models"].values():
        bf16 = figures["bfloat16"]
        assert 0 < bf16["max_abs_diff"] < 0.1  # the model really ran in bfloat16
        assert bf16["ms_per_image"] > 0
        assert figures["float32_ms_per_image"] > 0


def test_batching_and_limit_pick_a_measured_batch_size(dry_run: dict[str, Any]) -> None:
    batching = dry_run["checks"]["batching"]
    limit = dry_run["checks"]["limit"]
    for backbone, figures in batching["models"].items():
        assert set(figures["images_per_s"]) == {"1", "2", "4"}
        assert all(value > 0 for value in figures["images_per_s"].values())
        best = figures["best_batch"]
        assert figures["images_per_s"][str(best)] == max(figures["images_per_s"].values())
        assert limit["models"][backbone]["batch"] == best
        assert limit["models"][backbone]["forwards"] == [best]  # one forward for the batch
        assert limit["models"][backbone]["dtype"] == "float32"  # float16 on a GPU
        assert limit["models"][backbone]["images_per_s"] > 0
        assert limit["models"][backbone]["errors"] == 0
    assert batching["copy"]["note"].startswith("none")


def test_memory_cycles_are_measured_by_rss_on_the_cpu(dry_run: dict[str, Any]) -> None:
    memory = dry_run["checks"]["memory"]
    assert memory["measure"] == "rss" and memory["cycles"] == 3
    assert memory["before"]["allocated"] is None  # no CUDA figure is made up
    assert memory["after_first_load"]["rss"] > 0
    assert math.isfinite(memory["growth_percent"])
    assert "rss growth over 3 cycles" in memory["targets"]


def test_a_real_oversize_allocation_is_507_and_the_worker_keeps_serving(
    dry_run: dict[str, Any],
) -> None:
    oom = dry_run["checks"]["oom"]
    assert oom["alone"] == [200, 507, 200]
    assert oom["batch_of_three"] == [200, 507, 200]


def test_growth_percent() -> None:
    assert device_memory.growth_percent(100, 105) == 5.0
    assert device_memory.growth_percent(200, 100) == -50.0
    assert device_memory.growth_percent(0, 0) == 0.0
    assert device_memory.growth_percent(0, 1) == math.inf


def test_a_failed_requirement_fails_its_check_and_a_missed_target_does_not() -> None:
    check = Check("x", "cpu")
    check.target(False, "ratio", 0.5, ">= 0.8x on the GPU")
    assert check.status == "ok"
    check.require(False, "answer", [200, 500])
    assert check.status == "fail"
    assert check.rows == [
        ("ratio", "0.5", "not met (>= 0.8x on the GPU)"),
        ("answer", "[200, 500]", "FAIL"),
    ]
    text = gpu_check.table([check, Check("y", "cpu", status="skipped")])
    lines = text.splitlines()
    assert lines[0].split() == ["check", "item", "on", "value", "verdict"]
    assert lines[2].split()[:2] == ["x", "ratio"] and lines[3].endswith("FAIL")
    assert lines[4].split() == ["y", "skipped", "cpu"]


def test_results_go_to_the_device_machines_out_folder_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.default_out(dry_run=False) == tmp_path / "gpu-check.json"
    monkeypatch.delenv("OUT")
    assert gpu_check.default_out(dry_run=True) == gpu_check.RESULTS_DIR / "gpu-check-dry-run.json"


def test_the_json_is_strict() -> None:
    ready = gpu_check._json_ready({"p99_ms": float("nan"), "runs": [1.5, float("inf")]})
    assert ready == {"p99_ms": None, "runs": [1.5, None]}

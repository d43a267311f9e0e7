"""scripts/gpu-check --dry-run with its ``server`` section: the real Multi Model Server on
the CPU (the unit suite runs the in-process sections: tests/unit/test_gpu_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = ("placement", "decode", "precision", "batching", "limit", "memory", "oom")


def test_the_server_section_serves_measures_and_answers_507(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out),
         "--skip", *IN_PROCESS],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    server = json.loads(out.read_text())["checks"]["server"]
    assert server["status"] == "ok" and server["on"] == "cpu"
    assert server["oom_over_http"] == {"statuses": [200, 507, 200], "same_worker": True}
    assert set(server["models"]) == {"mobilenet_v3_small", "resnet18"}
    for entry in server["models"].values():
        assert entry["load_s"][0] > 0
        assert entry["memory_measure"] == "worker rss" and entry["device_memory_mib"] > 0
        stacks = [(run["stack"], run["concurrency"]) for run in entry["runs"]]
        assert stacks == [("scorer", 1), ("scorer", 2), ("reference", 1), ("reference", 2)]
        assert all(run["errors"] == 0 for run in entry["runs"])
        assert "vs_limit" not in entry  # the limit section did not run: no ratio is made up
    cycles = server["cycles"]
    assert cycles["measure"] == "server tree rss" and cycles["cycles"] == 2
    assert cycles["after_first_load_mib"] > cycles["after_first_unload_mib"]

"""The soak in its CI size: loads and evictions under concurrent load, nothing unexpected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_short_soak_has_no_unexpected_errors(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    assert main(["--short", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["statuses"] == {"200": result["requests"]}
    assert result["mismatched"] == 0
    assert result["cache"]["evictions"] > 0 and result["cache"]["failures"] == 0

"""Front-end modules must not import torch (it costs seconds and gigabytes per process)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "scorer.modelserver.process",
        "scorer.modelserver.start",
        "scorer.modelserver.janitor",
        "scorer.serving.gateway",
        "scorer.serving.self_managed",
        "scorer.cache",
        "scorer.local.runner",
    ],
)
def test_module_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

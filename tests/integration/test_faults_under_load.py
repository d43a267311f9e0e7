"""Faults under load, short form: one round of bench.faults against the real entrypoint.

Four clients invoke three models while a model's worker, another model's whole per-model
process and then the Java server are SIGKILLed in turn. The requirements (docs/
reliability.md, "Faults under load") are checked by ``Run.violations``: no request hangs,
failures only for the faulted model while its fault lasts, recovery within its bound, every
model serving afterwards. Then SIGTERM must leave no process behind.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bench.faults import inject, load_models, start_server
from tests.support.processes import assert_all_gone, descendants

pytestmark = pytest.mark.integration


def test_faults_under_load_are_recovered_and_nothing_is_left(tmp_path: Path) -> None:
    process, url = start_server(tmp_path)
    try:
        models = load_models(url, tmp_path)
        run = inject(process, url, models, quiet=4.0, rounds=1)
        figures = run.figures()
        assert figures["violations"] == [], figures
        assert {f.kind for f in run.faults} == {"worker", "per-model process", "java"}
        assert figures["ok"] > 0
        tree = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert_all_gone(tree)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

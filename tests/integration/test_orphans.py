"""Nothing outlives the command that started it: demo, serve and local, however they end.

Each test starts a real ``scorer`` command (which starts the real MMS, its JVM, the zygote
and model workers), records every process below it, ends it (SIGTERM, SIGKILL, or a model
that cannot load) and asserts that none of those processes is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from scorer.modelserver.ports import free_loopback_port
from tests.support.models import FAILING_MODEL_FN, add_code, creative_model_dir
from tests.support.processes import (
    assert_all_gone,
    descendants,
    runs_java,
    serving_entrypoint,
)
from tests.support.servers import server_environ

pytestmark = pytest.mark.integration

SCORER = [sys.executable, "-c", "import sys; from scorer.cli import main; sys.exit(main())"]


def _wait_for_ping(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url}/ping never answered 200")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[psutil.Process]]]:
    """``scorer demo`` (the shared var/ workdir: the demo model is trained once), ready."""
    port = free_loopback_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*SCORER, "demo", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_ping(f"http://127.0.0.1:{port}", process, log)
        tree = descendants(process.pid)
        assert runs_java(tree)
        yield process, tree
    finally:
        if process.poll() is None:
            process.kill()
        for child in descendants(process.pid):
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_sigterm_to_scorer_demo_stops_the_whole_model_server(
    demo: tuple[subprocess.Popen[bytes], list[psutil.Process]],
) -> None:
    process, tree = demo
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0  # a stop it was asked for is a clean exit
    assert_all_gone(tree)


def test_sigkill_to_scorer_serve_takes_its_model_server_down(tmp_path: Path) -> None:
    model = creative_model_dir(tmp_path / "models", "solo")
    env = server_environ(tmp_path / "run", {"SCORER_MODEL_DIR": str(model)})
    with serving_entrypoint(env, tmp_path / "serve.log") as (process, _url):
        tree = descendants(process.pid)
        assert runs_java(tree)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert_all_gone(tree)


def test_scorer_local_on_a_model_that_fails_to_load_exits_with_the_reason_and_nothing_left(
    tmp_path: Path,
) -> None:
    model = add_code(creative_model_dir(tmp_path / "models", "broken"), FAILING_MODEL_FN)
    started = subprocess.Popen(
        [*SCORER, "local", "--model-dir", str(model), "--port", "0",
         "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    java_seen = False
    while started.poll() is None:  # everything it starts, until it exits
        now = descendants(started.pid)
        java_seen = java_seen or runs_java(now)
        seen.update({p.pid: p for p in now})
        time.sleep(0.2)
    tree = list(seen.values())
    output, _ = started.communicate(timeout=240)  # the pipe closes only when no child holds it
    text = output.decode(errors="replace")
    assert java_seen, "the model server was never seen running"
    assert started.returncode == 2, text[-3000:]
    assert "failed to load" in text and "weights are corrupt on purpose" in text
    assert "Traceback" not in text.split("error:")[-1]
    assert_all_gone(tree)

"""Faults against the real server: killed workers, a killed model server, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from scorer.modelserver.inflight import in_flight
from tests.support.models import add_code, creative_model_dir, image_bytes, torchscript_model_dir
from tests.support.processes import serving_entrypoint
from tests.support.servers import load, server_environ
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SLEEPER = """
import json
import time

def model_fn(model_dir):
    return "sleeper"

def transform_fn(model, data, content_type, accept):
    time.sleep(3)
    return json.dumps({"slept": 3, "bytes": len(data)}), "application/json"
"""




def _invoke(url: str, name: str) -> int:
    response = httpx.post(
        f"{url}/models/{name}/invoke",
        content=image_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    return response.status_code


@pytest.fixture
def entrypoint_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``python entrypoint.py serve`` (as the container runs it) in multi-model mode."""
    models_root = tmp_path / "models"
    model_dir = creative_model_dir(models_root, "m1")
    env = server_environ(
        tmp_path / "run",
        {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(models_root)},
    )
    with serving_entrypoint(env, tmp_path / "serve.log") as (process, url):
        yield process, url, model_dir


def _children(pid: int, marker: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(marker in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_killed_worker_is_restarted_and_serves_again(entrypoint_server) -> None:  # type: ignore[no-untyped-def]
    process, url, model_dir = entrypoint_server
    with httpx.Client(base_url=url, timeout=120) as client:
        assert load(client, "m1", model_dir).status_code == 200
    assert _invoke(url, "m1") == 200
    # MMS runs one listener process per worker port, which forks the process that loads the
    # model and serves it; that one (the biggest, what an OOM killer would pick) is killed.
    workers = _children(process.pid, "model_service_worker")
    serving = [w for w in workers if w.ppid() in {x.pid for x in workers}]
    assert serving, f"no forked MMS worker among {[w.pid for w in workers]}"
    for worker in serving:
        worker.kill()
    wait_for(lambda: _invoke(url, "m1") == 200, 90, "the restarted worker to serve")


def test_killed_model_server_is_restarted_with_its_models(entrypoint_server) -> None:  # type: ignore[no-untyped-def]
    process, url, model_dir = entrypoint_server
    with httpx.Client(base_url=url, timeout=120) as client:
        assert load(client, "m1", model_dir).status_code == 200
    time.sleep(3)  # the entrypoint notes the loaded models every 2 s
    java = _children(process.pid, "com.amazonaws.ml.mms.ModelServer")
    assert java, "no MMS Java process found"
    java[0].kill()
    wait_for(lambda: _invoke(url, "m1") == 200, 120, "the model to serve after the restart")
    assert process.poll() is None


def test_sigterm_stops_the_server_and_its_workers(entrypoint_server) -> None:  # type: ignore[no-untyped-def]
    process, url, _ = entrypoint_server
    process.send_signal(signal.SIGTERM)
    # the timeout only bounds a hang; how soon it stops (SageMaker allows 30 s) is for bench/
    assert process.wait(timeout=120) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/ping", timeout=2)
    assert not _children(os.getpid(), "model_service_worker")


def test_sigterm_lets_requests_in_flight_finish(entrypoint_server) -> None:  # type: ignore[no-untyped-def]
    process, url, model_dir = entrypoint_server
    sleeper = add_code(torchscript_model_dir(model_dir.parent.parent, "sleeper"), SLEEPER)
    with httpx.Client(base_url=url, timeout=120) as client:
        assert load(client, "sleeper", sleeper).status_code == 200
    answers: list[httpx.Response] = []

    def invoke() -> None:
        answers.append(httpx.post(f"{url}/models/sleeper/invoke", content=b"abc", timeout=30))

    caller = threading.Thread(target=invoke)
    caller.start()
    inflight_dir = model_dir.parents[2] / "run" / "inflight"  # SCORER_RUN_DIR's, as drain reads
    wait_for(lambda: in_flight(inflight_dir) == 1, 60, "the request to be inside the worker")
    process.send_signal(signal.SIGTERM)  # while the model sleeps through its 3 s
    caller.join(timeout=30)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json() == {"slept": 3, "bytes": 3}
    assert process.wait(timeout=30) == 0

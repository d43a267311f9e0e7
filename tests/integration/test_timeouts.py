"""Timeouts in seconds that mean what they say, against the real Multi Model Server.

``SAGEMAKER_MODEL_SERVER_TIMEOUT=2`` bounds a request: a model that runs past it answers 504
with a JSON message naming the timeout (MMS alone would answer 500 "Worker died." and, with
its one timeout for loads too, fail every load slower than 2 s). ``SCORER_MODEL_LOAD_TIMEOUT``
bounds a load separately, with its reason in the log and the load-failure record.

The tests assert outcomes, never durations (how soon the answers come is for bench/): the
status, the message naming the bound, and that the answer came while the model was still
running (the model writes a file when its sleep ends; the file is not there yet). Each test
loads its own model, so none depends on another's abandoned request or on the order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scorer.modelserver import load_failures
from tests.support.models import add_code, torchscript_model_dir
from tests.support.servers import load, running_server
from tests.support.waiting import until_answered

pytestmark = pytest.mark.integration

SLOW_SECONDS = 30  # far past the request timeout: the answer must come while this still runs

# A request with body b"slow" sleeps, then leaves a file behind: while that file is missing,
# the model is still busy with it. Every answer names the worker process that gave it.
SLEEPY = f"""
import json
import os
import time
from pathlib import Path

def model_fn(model_dir):
    return Path(model_dir)

def transform_fn(model_dir, data, content_type, accept):
    if data == b"slow":
        time.sleep({SLOW_SECONDS})
        (model_dir / f"slow-request-finished-{{time.monotonic_ns()}}").touch()
    return json.dumps({{"bytes": len(data), "pid": os.getpid()}}), "application/json"
"""

SLOW_LOAD = """
import json
import time

def model_fn(model_dir):
    time.sleep(3)  # longer than the request timeout: loads have their own bound
    return "slow-load"

def transform_fn(model, data, content_type, accept):
    return json.dumps({"model": model}), "application/json"
"""

NEVER_LOADS = """
import time
from pathlib import Path

def model_fn(model_dir):
    time.sleep(60)
    (Path(model_dir) / "model_fn-finished").touch()
"""

REQUEST_TIMEOUT = 2
LOAD_TIMEOUT = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path, Path]]:
    root = tmp_path_factory.mktemp("models")
    run_dir = tmp_path_factory.mktemp("run")
    extra = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SCORER_MODELS_ROOT": str(root),
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(REQUEST_TIMEOUT),
        "SCORER_MODEL_LOAD_TIMEOUT": str(LOAD_TIMEOUT),
    }
    with (
        running_server(run_dir, extra) as started,
        httpx.Client(base_url=started.url, timeout=60) as http,
    ):
        yield http, root, run_dir


def _loaded(client: httpx.Client, root: Path, name: str, script: str = SLEEPY) -> Path:
    """A model of this test's own, loaded: its directory."""
    model_dir = add_code(torchscript_model_dir(root, name), script)
    response = load(client, name, model_dir)
    assert response.status_code == 200, response.text
    return model_dir


def _post(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.post(f"/models/{name}/invoke", content=body)


def _finished_slow_requests(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.glob("slow-request-finished-*"))


def test_a_load_slower_than_the_request_timeout_still_loads(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, _ = server
    _loaded(client, root, "slow-load", SLOW_LOAD)
    response = _post(client, "slow-load", b"x")
    assert response.status_code == 200 and response.json() == {"model": "slow-load"}


def test_a_request_past_the_timeout_is_504_and_the_next_one_is_served(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, _ = server
    model_dir = _loaded(client, root, "sleepy-once")
    before = _post(client, "sleepy-once", b"fast")
    assert before.status_code == 200, before.text
    response = _post(client, "sleepy-once", b"slow")
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["code"] == 504 and body["type"] == "RequestTimeoutError"
    assert body["message"] == (
        f"model sleepy-once did not answer within {REQUEST_TIMEOUT} s "
        "(SAGEMAKER_MODEL_SERVER_TIMEOUT)"
    )
    assert _finished_slow_requests(model_dir) == [], "the 504 must come while the model runs"
    fast = _post(client, "sleepy-once", b"fast")
    assert fast.status_code == 200, fast.text
    # the same worker answered the next request while the abandoned one was still running
    assert fast.json() == {"bytes": 4, "pid": before.json()["pid"]}
    assert _finished_slow_requests(model_dir) == []


def test_two_overrunning_requests_restart_the_worker_and_it_serves_again(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, _ = server
    model_dir = _loaded(client, root, "sleepy-twice")
    first_worker = _post(client, "sleepy-twice", b"fast").json()["pid"]
    assert _post(client, "sleepy-twice", b"slow").status_code == 504
    assert _post(client, "sleepy-twice", b"slow").status_code == 504  # both threads now busy
    assert _finished_slow_requests(model_dir) == []
    statuses, response = until_answered(  # a bound on waiting for the restart, not a measurement
        lambda timeout: client.post(
            "/models/sleepy-twice/invoke", content=b"fast", timeout=timeout
        ),
        120,
    )
    assert statuses[-1] == 200, statuses
    assert response is not None
    assert response.json()["pid"] != first_worker  # a fresh worker serves


def test_a_load_past_its_own_bound_fails_with_the_reason(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, run_dir = server
    _loaded(client, root, "neighbour")
    never = add_code(torchscript_model_dir(root, "never"), NEVER_LOADS)
    response = load(client, "never", never)
    assert 500 <= response.status_code < 600, response.text
    assert not (never / "model_fn-finished").exists(), "the load must fail while model_fn runs"
    assert client.get("/models/never").status_code == 404
    recorded = load_failures.read(run_dir / "load-failures", "never")
    assert recorded is not None and recorded["status"] == 504
    assert f"did not load within {LOAD_TIMEOUT} s" in str(recorded["message"])
    ok = _post(client, "neighbour", b"fast")
    assert ok.status_code == 200 and ok.json()["bytes"] == 4

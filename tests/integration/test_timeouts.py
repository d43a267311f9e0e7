"""Timeouts in seconds that mean what they say, against the real Multi Model Server.

``SAGEMAKER_MODEL_SERVER_TIMEOUT=2`` bounds a request: a model that runs past it answers 504
with a JSON message shortly after 2 s (MMS alone would answer 500 "Worker died." and, with
its one timeout for loads too, fail every load slower than 2 s). ``SCORER_MODEL_LOAD_TIMEOUT``
bounds a load separately, with its reason in the log and the load-failure record.

The bounds below (an answer well before the 10 s the model sleeps) are what the contract
promises, not performance figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scorer.modelserver import load_failures
from tests.support.models import add_code, torchscript_model_dir
from tests.support.servers import load, running_server

pytestmark = pytest.mark.integration

SLEEPY = """
import json
import time

def model_fn(model_dir):
    time.sleep(3)  # longer than the request timeout: loads have their own bound
    return "sleepy"

def transform_fn(model, data, content_type, accept):
    if data == b"slow":
        time.sleep(10)
    return json.dumps({"bytes": len(data)}), "application/json"
"""

NEVER_LOADS = """
import time

def model_fn(model_dir):
    time.sleep(60)
"""

REQUEST_TIMEOUT = 2
LOAD_TIMEOUT = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path, Path]]:
    root = tmp_path_factory.mktemp("models")
    add_code(torchscript_model_dir(root, "sleepy"), SLEEPY)
    add_code(torchscript_model_dir(root, "never"), NEVER_LOADS)
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


def _timed_post(client: httpx.Client, body: bytes) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = client.post("/models/sleepy/invoke", content=body)
    return response, time.monotonic() - began


def test_a_load_slower_than_the_request_timeout_still_loads(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, _ = server
    response = load(client, "sleepy", root / "sleepy" / "model")
    assert response.status_code == 200, response.text


def test_a_request_past_the_timeout_is_504_and_the_next_one_is_served(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, _, _ = server
    response, took = _timed_post(client, b"slow")
    assert response.status_code == 504, response.text
    assert took < 8, f"the answer must come soon after the {REQUEST_TIMEOUT} s timeout"
    body = response.json()
    assert body["code"] == 504 and body["type"] == "RequestTimeoutError"
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in body["message"]
    fast, _ = _timed_post(client, b"fast")
    assert fast.status_code == 200 and fast.json() == {"bytes": 4}


def test_two_overrunning_requests_restart_the_worker_and_it_serves_again(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, _, _ = server
    time.sleep(10)  # the previous test's abandoned request finishes
    assert _timed_post(client, b"slow")[0].status_code == 504
    assert _timed_post(client, b"slow")[0].status_code == 504  # both threads now busy
    deadline = time.monotonic() + 60
    statuses = []
    while time.monotonic() < deadline:
        response, _ = _timed_post(client, b"fast")
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses


def test_a_load_past_its_own_bound_fails_with_the_reason(
    server: tuple[httpx.Client, Path, Path],
) -> None:
    client, root, run_dir = server
    began = time.monotonic()
    response = load(client, "never", root / "never" / "model")
    took = time.monotonic() - began
    assert response.status_code >= 500
    assert took < 40, "the load bound is 8 s, far below the model_fn's 60 s"
    assert client.get("/models/never").status_code == 404
    recorded = load_failures.read(run_dir / "load-failures", "never")
    assert recorded is not None and recorded["status"] == 504
    assert f"did not load within {LOAD_TIMEOUT} s" in str(recorded["message"])
    ok = client.post("/models/sleepy/invoke", content=b"fast")
    assert ok.status_code == 200

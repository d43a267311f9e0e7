"""The single-model contract (real-time, async, batch): ``/ping`` and ``/invocations``
against the real Multi Model Server, model at the configured model dir."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scorer.modelserver.process import ModelServer
from tests.support.models import FAILING_MODEL_FN, add_code, creative_model_dir, image_bytes
from tests.support.servers import running_server, server_environ

pytestmark = pytest.mark.integration

SCRIPT = """
def output_fn(prediction, accept, context):
    context.response_custom_attributes = "heads=" + ",".join(prediction.head_names)
    import json
    return json.dumps({"n": len(prediction.records()), "first": prediction.records()[0]})
"""

# model_fn takes 4 s, then the default chain serves; output_fn marks the answer.
SLOW_MODEL_FN = """
import json
import time
import torch
from scorer.inference.defaults import CreativeScoringDefaults

def model_fn(model_dir):
    time.sleep(4)
    defaults = CreativeScoringDefaults(torch.device("cpu"), allow_pickle=False, model_name="slow")
    return defaults.model_fn(model_dir)

def output_fn(prediction, accept):
    return json.dumps({"slow": True, "n": len(prediction.records())}), "application/json"
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    build = tmp_path_factory.mktemp("model")
    model_dir = add_code(creative_model_dir(build, "solo", heads=("appeal",)), SCRIPT)
    extra = {
        "SAGEMAKER_MULTI_MODEL": "false",
        "SCORER_MODEL_DIR": str(model_dir),
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3",
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
    }
    with (
        running_server(tmp_path_factory.mktemp("run"), extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


def test_ping_is_healthy_once_the_model_is_loaded(client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200


def test_invocations_scores_an_image(client: httpx.Client) -> None:
    response = client.post(
        "/invocations", content=image_bytes("PNG"), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n"] == 1 and set(body["first"]) == {"appeal"}
    assert response.headers["x-amzn-sagemaker-custom-attributes"] == "heads=appeal"


def test_invocations_batch_in_json(client: httpx.Client) -> None:
    images = [{"b64": base64.b64encode(image_bytes(seed=i)).decode()} for i in range(4)]
    response = client.post("/invocations", json={"images": images})
    assert response.status_code == 200, response.text
    assert response.json()["n"] == 4


def test_invocations_client_error_is_4xx(client: httpx.Client) -> None:
    response = client.post(
        "/invocations", content=b"\x89PNG\r\n\x1a\n broken", headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "BadRequestError"
    assert "Traceback" not in response.text


def test_payload_over_the_limit_is_413(client: httpx.Client) -> None:
    too_big = b"\0" * (6 * 1024 * 1024 + 1)
    response = client.post(
        "/invocations", content=too_big, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 413
    assert client.get("/ping").status_code == 200


def test_model_dir_is_served_as_model(client: httpx.Client, tmp_path: Path) -> None:
    models = client.get("/models").json()["models"]
    assert [m["modelName"] for m in models] == ["model"]


def test_execution_parameters_for_batch_transform(client: httpx.Client) -> None:
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.json() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 6,
    }


def _ping_until(url: str, status: int, seconds: float) -> list[httpx.Response]:
    """Ping until ``status`` answers (or ``seconds`` pass); every answer, in order."""
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            answers.append(httpx.get(f"{url}/ping", timeout=5))
            if answers[-1].status_code == status:
                break
        time.sleep(0.2)
    return answers


@contextlib.contextmanager
def started(tmp_path: Path, model_dir: Path) -> Iterator[ModelServer]:
    """A single-model server, started but not waited for."""
    extra = {"SAGEMAKER_MULTI_MODEL": "false", "SCORER_MODEL_DIR": str(model_dir)}
    environ = server_environ(tmp_path / "run", extra)
    server = ModelServer.from_environ(environ, bind_address="127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=10)


def test_ping_is_503_when_the_model_cannot_load(tmp_path: Path) -> None:
    broken = creative_model_dir(tmp_path / "build", "broken")
    (broken / "spec.json").write_text("{not json")
    with started(tmp_path, broken) as server:
        answers = _ping_until(server.url, 200, 15)
        assert answers and all(a.status_code == 503 for a in answers)
        body = answers[-1].json()
        assert body["status"] == "Unhealthy"
        assert "failed to load" in body["message"] and "spec.json" in body["message"]
        assert "Traceback" not in answers[-1].text


def test_ping_names_the_reason_a_model_fn_failed(tmp_path: Path) -> None:
    model_dir = add_code(creative_model_dir(tmp_path / "build", "broken"), FAILING_MODEL_FN)
    with started(tmp_path, model_dir) as server:
        answers = _ping_until(server.url, 200, 15)
        assert answers[-1].status_code == 503
        message = answers[-1].json()["message"]
        assert "RuntimeError: weights are corrupt on purpose" in message
        assert "Traceback" not in message


def test_ping_is_503_while_loading_then_200(tmp_path: Path) -> None:
    model_dir = add_code(creative_model_dir(tmp_path / "build", "slow"), SLOW_MODEL_FN)
    with started(tmp_path, model_dir) as server:
        answers = _ping_until(server.url, 200, 120)
        statuses = [a.status_code for a in answers]
        assert statuses[-1] == 200, statuses
        loading = [a for a in answers if a.status_code == 503]
        assert loading, "the model takes 4 s to load: /ping must say 503 meanwhile"
        assert all("is loading" in a.json()["message"] for a in loading)
        scored = httpx.post(f"{server.url}/invocations", content=image_bytes(),
                            headers={"Content-Type": "image/jpeg"}, timeout=60)  # fmt: skip
        assert scored.status_code == 200 and scored.json()["slow"] is True

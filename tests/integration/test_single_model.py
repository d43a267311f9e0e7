"""The single-model contract (real-time, async, batch): ``/ping`` and ``/invocations``
against the real Multi Model Server, model at the configured model dir."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scorer.serving.mms import ModelServer
from tests.support.models import add_code, creative_model_dir, image_bytes
from tests.support.servers import running_server, server_environ

pytestmark = pytest.mark.integration

SCRIPT = """
def output_fn(prediction, accept, context):
    context.response_custom_attributes = "heads=" + ",".join(prediction.head_names)
    import json
    return json.dumps({"n": len(prediction.records()), "first": prediction.records()[0]})
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


def test_ping_is_503_when_the_model_cannot_load(tmp_path: Path) -> None:
    broken = creative_model_dir(tmp_path / "build", "broken")
    (broken / "spec.json").write_text("{not json")
    extra = {"SAGEMAKER_MULTI_MODEL": "false", "SCORER_MODEL_DIR": str(broken)}
    server = ModelServer(server_environ(tmp_path / "run", extra), bind_address="127.0.0.1")
    server.start()
    try:
        with pytest.raises(RuntimeError):
            server.wait_ready(timeout=30)
        response = httpx.get(f"{server.url}/ping", timeout=5)
        assert response.status_code == 503
        assert response.json()["status"] == "Unhealthy"
    finally:
        server.stop(grace=10)

"""A transform job's container: the ``SAGEMAKER_BATCH*`` variables on a real single-model
Multi Model Server. ``GET /execution-parameters`` answers the configured values (the API's
``SingleRecord`` spelling answered as the container contract's ``SINGLE_RECORD``), and
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` is the request size MMS enforces: a body over it is a clean
413 (no traceback; the server keeps serving), one under it is scored."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.models import creative_model_dir, image_bytes
from tests.support.servers import external_url, running_server

pytestmark = pytest.mark.integration

PAYLOAD_MB = 1
ENVIRONMENT = {
    "SAGEMAKER_MULTI_MODEL": "false",
    "SAGEMAKER_BATCH": "true",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_MB),
    "SAGEMAKER_BATCH_STRATEGY": "SingleRecord",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    if external_url() is not None:
        pytest.skip("configures its own server's environment")
    model_dir = creative_model_dir(tmp_path_factory.mktemp("model"), "batch", heads=("appeal",))
    extra = {**ENVIRONMENT, "SCORER_MODEL_DIR": str(model_dir)}
    with (
        running_server(tmp_path_factory.mktemp("run"), extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


def test_execution_parameters_answer_the_configured_values(client: httpx.Client) -> None:
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.json() == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": PAYLOAD_MB,
    }


def test_a_body_over_max_payload_is_a_clean_413(client: httpx.Client) -> None:
    too_big = b"\xff" * (PAYLOAD_MB * 1024 * 1024 + 1)
    response = client.post("/invocations", content=too_big, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 413
    assert "Traceback" not in response.text and "Exception" not in response.text
    assert client.get("/ping").status_code == 200


def test_a_body_under_max_payload_is_scored(client: httpx.Client) -> None:
    body = image_bytes("JPEG")
    assert len(body) < PAYLOAD_MB * 1024 * 1024
    response = client.post("/invocations", content=body, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert set(response.json()["scores"][0]) == {"appeal"}

"""The emulator as a single-model endpoint (``scorer local --model-dir``): no TargetModel.

The model is a ``model.tar.gz``: the emulator extracts it safely and the model server it
starts serves it on ``/invocations``, as a SageMaker single-model endpoint does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory
from tests.support.models import creative_model_dir, image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build = tmp_path_factory.mktemp("build")
    archive = build / "model.tar.gz"
    pack_directory(creative_model_dir(build, "solo", heads=("appeal",)), archive)
    settings = LocalSettings(
        port=0, endpoint_name="solo", model_dir=archive, run_dir=tmp_path_factory.mktemp("run")
    )
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running() as url:
        yield url




def test_invoke_without_target_model(runtime: Any, url: str) -> None:
    response = runtime.invoke_endpoint(
        EndpointName="solo", ContentType="image/png", Body=image_bytes("PNG")
    )
    body = json.loads(response["Body"].read())
    assert body["model"] == "solo" and set(body["scores"][0]) == {"appeal"}
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert httpx.get(f"{url}/_scorer/cache").json() == {"multi_model": False}


def test_target_model_on_a_single_model_endpoint_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        runtime.invoke_endpoint(
            EndpointName="solo", TargetModel="m.tar.gz", ContentType="image/png", Body=b"x"
        )
    assert "single-model endpoint" in raised.value.response["Error"]["Message"]


def test_model_error_on_a_single_model_endpoint(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint(EndpointName="solo", ContentType="image/png", Body=b"x")
    assert raised.value.response["OriginalStatusCode"] == 400

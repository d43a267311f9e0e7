"""Emulator error paths that need no model server, with the real boto3 client over HTTP.

The emulator (uvicorn in a thread) runs with a real directory source and an in-memory
registry that never, slowly or wrongly loads: ModelNotReadyException, ServiceUnavailable,
InternalFailure and InternalDependencyException come back as the SDK's own exceptions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from scorer.cache import CacheSettings, ModelCache, S3Source
from scorer.cache.sources import DirectorySource, ModelSource
from scorer.frontend.backend import ModelServerEndpoint
from scorer.local.app import create_app
from scorer.local.runner import serve_in_thread
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_files
from scorer.modelserver.ports import free_loopback_port
from tests.support.clients import runtime_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Registry:
    """A model server port that registers after ``delay`` seconds, or raises ``error``."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error

    async def register(self, name: str, model_dir: Path) -> None:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error

    async def unregister(self, name: str) -> None:
        return None

    async def memory_bytes(self, name: str) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("prefix")
    pack_files({"spec.json": b"{}", "model.bin": b"weights"}, prefix / "m.tar.gz")
    return prefix


@pytest.fixture(scope="module")
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there


@pytest.fixture
def emulator(
    request: pytest.FixtureRequest, prefix: Path, tmp_path: Path, closed_port_url: str
) -> Iterator[Any]:
    registry, load_wait, source = request.param
    settings = LocalSettings(
        port=0,
        model_server_url=closed_port_url,
        cache=CacheSettings(model_prefix=str(prefix), load_wait_seconds=load_wait),
    )
    model_source: ModelSource = source() if source else DirectorySource(prefix)
    cache = ModelCache(model_source, registry, tmp_path / "cache", load_wait_s=load_wait)
    endpoint = ModelServerEndpoint(closed_port_url)
    with serve_in_thread(create_app(settings, endpoint, cache)) as url:
        yield runtime_client(url, read_timeout=60)


def invoke(runtime: Any) -> Any:
    return runtime.invoke_endpoint(
        EndpointName="scorer-local", TargetModel="m.tar.gz", ContentType="text/plain", Body=b"x"
    )


@pytest.mark.parametrize("emulator", [(Registry(delay=5.0), 0.3, None)], indirect=True)
def test_a_slow_load_is_model_not_ready(emulator: Any) -> None:
    with pytest.raises(emulator.exceptions.ModelNotReadyException) as raised:
        invoke(emulator)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "still loading" in raised.value.response["Error"]["Message"]


@pytest.mark.parametrize("emulator", [(Registry(), 5.0, None)], indirect=True)
def test_an_unreachable_model_server_is_service_unavailable(emulator: Any) -> None:
    with pytest.raises(emulator.exceptions.ServiceUnavailable) as raised:
        invoke(emulator)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


@pytest.mark.parametrize(
    "emulator", [(Registry(error=RuntimeError("secret internals")), 5.0, None)], indirect=True
)
def test_an_emulator_fault_is_internal_failure_without_details(emulator: Any) -> None:
    with pytest.raises(emulator.exceptions.InternalFailure) as raised:
        invoke(emulator)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 500
    text = json.dumps(response, default=str)
    assert "secret internals" not in text and "Traceback" not in text
    assert "request id" in response["Error"]["Message"]


def _unreachable_s3() -> S3Source:
    port = free_loopback_port()

    def factory() -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
        )

    return S3Source("models", "prefix", client_factory=factory)


@pytest.mark.parametrize("emulator", [(Registry(), 5.0, _unreachable_s3)], indirect=True)
def test_an_unreachable_model_source_is_internal_dependency_exception(emulator: Any) -> None:
    with pytest.raises(emulator.exceptions.InternalDependencyException) as raised:
        invoke(emulator)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 530
    assert "s3://models/prefix/m.tar.gz" in raised.value.response["Error"]["Message"]


@pytest.mark.parametrize("emulator", [(Registry(), 5.0, None)], indirect=True)
def test_unknown_routes_are_json_errors(emulator: Any) -> None:
    url = emulator.meta.endpoint_url
    response = httpx.get(f"{url}/endpoints/scorer-local/invocations")
    assert response.status_code == 405
    assert response.headers["x-amzn-errortype"] == "UnknownOperationException"
    assert httpx.get(f"{url}/nope").status_code == 404
    assert httpx.get(f"{url}/ping").status_code == 200

"""The local SageMaker Runtime emulator with real clients against the real model server.

One Multi Model Server (Java) and one emulator (uvicorn, background thread) serve a
directory model prefix for the whole module, with ``max_models=2``. The clients are the
real boto3 ``sagemaker-runtime`` client and the real AWS SDK for JavaScript v3.

The same suite runs against the compose stack (``scripts/container-test``): with
``SCORER_TEST_LOCAL_URL`` set it uses that running emulator instead, and writes the archives
into ``SCORER_TEST_LOCAL_PREFIX``, the folder the stack serves as its prefix (its cache
holds 2 models too). The few checks that look inside the emulator's own processes and
folders are then left out.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scorer.cache import CacheSettings, model_hash
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory
from tests.support.metrics import scrape
from tests.support.models import (
    ECHO_SCRIPT,
    FAILING_MODEL_FN,
    add_code,
    creative_model_dir,
    image_bytes,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def _traversal_archive(path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    path.write_bytes(buf.getvalue())


EXTERNAL_URL = os.environ.get("SCORER_TEST_LOCAL_URL")
EXTERNAL_PREFIX = os.environ.get("SCORER_TEST_LOCAL_PREFIX")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    prefix = Path(EXTERNAL_PREFIX) if EXTERNAL_URL and EXTERNAL_PREFIX else (
        tmp_path_factory.mktemp("prefix")
    )  # fmt: skip
    (prefix / "market").mkdir(exist_ok=True)
    models = {
        "creative-v3.tar.gz": creative_model_dir(build, "creative-v3", seed=1),
        "market/fr.tar.gz": creative_model_dir(build, "market-fr", heads=("ctr",), seed=2),
        "echo.tar.gz": add_code(creative_model_dir(build, "echo"), ECHO_SCRIPT),
        "broken.tar.gz": add_code(creative_model_dir(build, "broken"), FAILING_MODEL_FN),
    }
    for key, model_dir in models.items():
        pack_directory(model_dir, prefix / key)
    (prefix / "corrupt.tar.gz").write_bytes((prefix / "echo.tar.gz").read_bytes()[:500])
    _traversal_archive(prefix / "unsafe.tar.gz")
    return prefix


@pytest.fixture(scope="module")
def endpoint(
    prefix: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, LocalEndpoint | None]]:
    if EXTERNAL_URL:
        yield EXTERNAL_URL.rstrip("/"), None  # the compose stack, already serving ``prefix``
        return
    settings = LocalSettings(
        port=0,
        cache=CacheSettings(model_prefix=str(prefix), max_models=2),
        run_dir=tmp_path_factory.mktemp("run"),
    )
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running() as url:
        yield url, local


@pytest.fixture(scope="module")
def url(endpoint: tuple[str, LocalEndpoint | None]) -> str:
    return endpoint[0]


def stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_scorer/cache", timeout=10).json()["cache"]


def invoke(runtime: Any, target: str | None = "creative-v3.tar.gz", **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "EndpointName": "scorer-local",
        "ContentType": "image/jpeg",
        "Body": image_bytes(),
    }
    if target is not None:
        args["TargetModel"] = target
    args.update(kwargs)
    return runtime.invoke_endpoint(**args)


def cached_dirs(local: LocalEndpoint | None) -> list[str] | None:
    """The emulator's extracted models (None: an external emulator's are not visible)."""
    if local is None:
        return None
    assert local.model_server is not None
    root = local.model_server.config.models_root
    return sorted(p.name for p in root.iterdir())


def model_server_models(local: LocalEndpoint | None) -> set[str] | None:
    """The models its model server lists (None: an external emulator's is not reachable)."""
    if local is None:
        return None
    assert local.endpoint is not None
    listed = httpx.get(f"{local.endpoint.url}/models", timeout=10).json()
    return {model["modelName"] for model in listed["models"]}


# --------------------------------------------------------------------------- serving


def test_cold_load_then_warm_hit(runtime: Any, url: str) -> None:
    before = stats(url)
    cold = invoke(runtime)
    body = json.loads(cold["Body"].read())
    assert body["model"] == "creative-v3"
    assert set(body["scores"][0]) == {"appeal", "clarity"}
    assert cold["ContentType"] == "application/json"
    assert cold["InvokedProductionVariant"] == "AllTraffic"
    assert cold["ResponseMetadata"]["RequestId"]
    assert "CustomAttributes" not in cold  # the model did not set any
    warm = invoke(runtime)
    assert json.loads(warm["Body"].read()) == body
    after = stats(url)
    assert after["loads"] == before["loads"] + 1
    assert after["hits"] == before["hits"] + 1
    assert "creative-v3.tar.gz" in after["resident_models"]


def test_prometheus_metrics_count_a_request_per_model(runtime: Any, url: str) -> None:
    name = model_hash("creative-v3.tar.gz")  # the model server's name for the key
    ok = ("scorer_requests_total", frozenset({("model", name), ("code", "200")}))

    before = scrape(url).get(ok, 0.0)
    invoke(runtime, "creative-v3.tar.gz")
    after = scrape(url)
    assert after[ok] == before + 1
    info = ("scorer_cache_model_info", frozenset({("model", name), ("key", "creative-v3.tar.gz")}))
    assert after[info] == 1


def test_accept_selects_the_response_content_type(runtime: Any) -> None:
    response = invoke(runtime, Accept="text/csv")
    assert response["ContentType"].startswith("text/csv")
    header, row = response["Body"].read().decode().strip().splitlines()
    assert header == "appeal,clarity" and len(row.split(",")) == 2


def test_custom_attributes_reach_the_model_and_come_back(runtime: Any) -> None:
    response = invoke(
        runtime,
        "echo.tar.gz",
        ContentType="application/octet-stream",
        Body=b"12345",
        CustomAttributes="tag=blue;trace=1",
    )
    assert json.loads(response["Body"].read()) == {"n": 5, "tag": "blue"}
    assert response["CustomAttributes"] == "echo=blue"


def test_the_inference_id_reaches_the_model(runtime: Any) -> None:
    response = invoke(
        runtime,
        "echo.tar.gz",
        ContentType="application/octet-stream",
        Body=b"123",
        InferenceId="campaign-7/run-42",
    )
    echoed = json.loads(response["Body"].read())
    assert echoed == {"n": 3, "tag": None, "inference_id": "campaign-7/run-42"}


def test_lru_eviction_with_two_models_and_one_load_for_concurrent_requests(
    runtime: Any, url: str, endpoint: tuple[str, LocalEndpoint | None]
) -> None:
    local = endpoint[1]
    invoke(runtime, "echo.tar.gz", ContentType="application/octet-stream", Body=b"x")
    invoke(runtime)  # creative-v3 is now the most recently used, echo the least
    before = stats(url)
    assert before["resident_models"] == ["echo.tar.gz", "creative-v3.tar.gz"]

    # eight concurrent first requests for a third model: one load, echo (LRU) evicted
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: invoke(runtime, "market/fr.tar.gz"), range(8)))
    bodies = [json.loads(r["Body"].read()) for r in responses]
    assert all(b["model"] == "market-fr" and set(b["scores"][0]) == {"ctr"} for b in bodies)
    after = stats(url)
    assert after["loads"] == before["loads"] + 1
    assert after["misses"] == before["misses"] + 8
    assert after["evictions"] == before["evictions"] + 1
    assert after["resident_models"] == ["creative-v3.tar.gz", "market/fr.tar.gz"]
    expected = sorted([model_hash("creative-v3.tar.gz"), model_hash("market/fr.tar.gz")])
    if local is not None:
        assert cached_dirs(local) == expected  # evicted: its directory is gone
        assert model_server_models(local) == set(expected)  # and it is unloaded from MMS

    # the evicted model loads again on its next request (evicting creative-v3 now)
    reloaded = invoke(runtime, "echo.tar.gz", ContentType="text/plain", Body=b"abc")
    assert json.loads(reloaded["Body"].read())["n"] == 3
    final = stats(url)
    assert final["loads"] == after["loads"] + 1
    assert final["resident_models"] == ["market/fr.tar.gz", "echo.tar.gz"]


# --------------------------------------------------------------------------- errors


def test_model_error_carries_the_models_status_and_body(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        invoke(runtime, "market/fr.tar.gz", Body=b"definitely not a jpeg")
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    original = json.loads(response["OriginalMessage"])
    assert original["code"] == 400 and "not a decodable image" in original["message"]
    assert response["LogStreamArn"].startswith("arn:aws:logs:us-east-1:")
    assert "Received client error (400)" in response["Error"]["Message"]
    assert "Traceback" not in json.dumps(response, default=str)


def test_unknown_target_model_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, "missing/creative-v9.tar.gz")
    message = raised.value.response["Error"]["Message"]
    assert "'missing/creative-v9.tar.gz' not found" in message


@pytest.mark.parametrize("target", ["../creative-v3.tar.gz", "market/../../x.tar.gz", "a//b"])
def test_unsafe_target_model_is_a_validation_error(runtime: Any, target: str) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, target)
    assert "target model name" in raised.value.response["Error"]["Message"]


def test_missing_target_model_on_a_multi_model_endpoint(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, None)
    assert "TargetModel" in raised.value.response["Error"]["Message"]


def test_unknown_endpoint_name(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, EndpointName="prod-endpoint")
    message = raised.value.response["Error"]["Message"]
    assert message == "Endpoint prod-endpoint of account 000000000000 not found."


def test_payload_over_the_limit_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, "market/fr.tar.gz", Body=b"\0" * (6_291_456 + 1))
    assert "6291456" in raised.value.response["Error"]["Message"]
    # exactly at the limit, the request reaches the model (which rejects the bytes)
    with pytest.raises(runtime.exceptions.ModelError):
        invoke(runtime, "market/fr.tar.gz", Body=b"\0" * 6_291_456)


def test_custom_attributes_over_1024_characters(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError):
        invoke(runtime, "market/fr.tar.gz", CustomAttributes="a" * 1025)


@pytest.mark.parametrize("key", ["corrupt.tar.gz", "unsafe.tar.gz"])
def test_corrupt_or_unsafe_archive_is_a_validation_error_and_leaves_nothing(
    runtime: Any, endpoint: tuple[str, LocalEndpoint | None], key: str
) -> None:
    local = endpoint[1]
    resident = cached_dirs(local)
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, key)
    message = raised.value.response["Error"]["Message"]
    assert f"model '{key}' cannot be used" in message
    assert cached_dirs(local) == resident
    if local is not None:
        assert local.model_server is not None
        root = local.model_server.config.models_root
        assert not (root.parent / "escaped.txt").exists()
        assert not (root.parent.parent / "escaped.txt").exists()
    assert invoke(runtime, "market/fr.tar.gz")["InvokedProductionVariant"] == "AllTraffic"


def test_a_model_that_fails_to_load_is_a_model_error_and_others_keep_serving(
    runtime: Any, url: str, endpoint: tuple[str, LocalEndpoint | None]
) -> None:
    local = endpoint[1]
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        invoke(runtime, "broken.tar.gz")
    response = raised.value.response
    assert response["OriginalStatusCode"] == 500
    assert "'broken.tar.gz' failed to load" in response["OriginalMessage"]
    assert "log" in response["OriginalMessage"]
    assert "weights are corrupt" not in response["Error"]["Message"]  # that is in the log
    # room was made for it (LRU eviction) but nothing of it is left
    if local is not None:
        assert cached_dirs(local) == sorted(model_server_models(local) or ())
        assert model_hash("broken.tar.gz") not in (cached_dirs(local) or ())
    assert "broken.tar.gz" not in stats(url)["resident_models"]
    assert invoke(runtime, "market/fr.tar.gz")["InvokedProductionVariant"] == "AllTraffic"
    assert stats(url)["failures"] >= 1


def test_host_memory_of_resident_models_is_measured(
    endpoint: tuple[str, LocalEndpoint | None],
) -> None:
    from scorer.modelserver.workers import worker_memory

    local = endpoint[1]
    if local is None:
        pytest.skip("an external emulator's model server processes are not visible here")
    assert local.model_server is not None and local.model_server.process is not None
    measured = worker_memory(local.model_server.process.pid, model_hash("market/fr.tar.gz"))
    assert measured > 20 * 1024 * 1024  # a Python worker with torch, not the archive size


# --------------------------------------------------------------------------- JavaScript


def _npm_install() -> None:
    if (JS_DIR / "node_modules" / "@aws-sdk" / "client-sagemaker-runtime").is_dir():
        return
    command = ["npm", "ci"] if (JS_DIR / "package-lock.json").exists() else ["npm", "install"]
    subprocess.run([*command, "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=240)


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm missing"
)
def test_aws_sdk_for_javascript_v3(url: str, tmp_path: Path) -> None:
    _npm_install()
    image = tmp_path / "creative.jpg"
    image.write_bytes(image_bytes())
    calls = [
        {
            "endpointName": "scorer-local",
            "targetModel": "market/fr.tar.gz",
            "contentType": "image/jpeg",
            "bodyFile": str(image),
        },
        {
            "endpointName": "scorer-local",
            "targetModel": "market/fr.tar.gz",
            "contentType": "image/jpeg",
            "bodyText": "not an image",
        },
        {
            "endpointName": "scorer-local",
            "targetModel": "nope.tar.gz",
            "contentType": "image/jpeg",
            "bodyText": "x",
        },
    ]
    calls_file = tmp_path / "calls.json"
    calls_file.write_text(json.dumps(calls))
    result = subprocess.run(
        ["node", "invoke.mjs", str(calls_file)],
        cwd=JS_DIR,
        env={**os.environ, "ENDPOINT_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ok, model_error, validation = (json.loads(line) for line in result.stdout.splitlines())
    assert ok["ok"] and ok["status"] == 200
    assert ok["contentType"] == "application/json"
    assert ok["invokedProductionVariant"] == "AllTraffic"
    assert ok["requestId"]
    assert json.loads(ok["body"])["model"] == "market-fr"
    assert model_error["name"] == "ModelError" and model_error["isModelError"]
    assert model_error["status"] == 424 and model_error["originalStatusCode"] == 400
    assert "not a decodable image" in model_error["originalMessage"]
    assert validation["name"] == "ValidationError" and validation["status"] == 400
    assert "not found" in validation["message"]

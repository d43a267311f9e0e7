"""The self-managed multi-model mode as the container runs it (``entrypoint.py serve`` with
``SCORER_MODEL_PREFIX``), models in an S3 prefix on a real S3-compatible server (moto).

On CPU here; the same mode serves GPU instances, where the cache also enforces a device
memory budget.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest

from scorer.cache import model_hash
from scorer.models.archive import pack_directory
from scorer.modelserver.ports import free_loopback_port
from tests.support.metrics import scrape
from tests.support.models import creative_model_dir, image_bytes
from tests.support.processes import serving_entrypoint, stop_tree
from tests.support.s3 import moto_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ENTRYPOINT = Path(__file__).resolve().parents[2] / "entrypoint.py"
BUCKET = "gpu-endpoint-models"
PREFIX = "creatives/"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server() as url:
        yield _fill_bucket(url, tmp_path_factory.mktemp("archives"))


def _fill_bucket(url: str, build: Path) -> str:
    """The models of the suite (and two bad archives) in the moto server at ``url``."""
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    client.create_bucket(Bucket=BUCKET)
    for name, heads in (
        ("market-fr", ("appeal",)),
        ("market-de", ("appeal", "ctr")),
        ("market-it", ("ctr",)),
        ("market-es", ("appeal",)),
    ):
        archive = build / f"{name}.tar.gz"
        pack_directory(creative_model_dir(build, name, heads=heads), archive)
        client.upload_file(str(archive), BUCKET, f"{PREFIX}{name}.tar.gz")
    corrupt = io.BytesIO()
    with tarfile.open(fileobj=corrupt, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}evil.tar.gz", Body=corrupt.getvalue())
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}garbage.tar.gz", Body=b"not a tar at all")
    return url


@pytest.fixture(scope="module")
def endpoint(s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("self-managed")
    port = free_loopback_port()
    env = {
        **os.environ,
        "SCORER_MODEL_PREFIX": f"s3://{BUCKET}/{PREFIX}",
        "SCORER_DEFAULT_MODEL": "market-fr.tar.gz",
        "SCORER_CACHE_DIR": str(work / "cache"),
        "SCORER_CACHE_MAX_MODELS": "2",
        "SCORER_RUN_DIR": str(work / "run"),
        "SCORER_THREADS_PER_WORKER": "1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("SAGEMAKER_MULTI_MODEL", None)
    with serving_entrypoint(env, work / "serve.log") as (_process, url):
        yield url


def invoke(url: str, target: str | None, **headers: str) -> httpx.Response:
    if target is not None:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = f"target_model={target}"
    return httpx.post(
        f"{url}/invocations",
        content=image_bytes(),
        headers={"Content-Type": "image/jpeg", **headers},
        timeout=120,
    )


def metrics(url: str) -> dict[str, Any]:
    """The cache's statistics (JSON; ``/metrics`` is Prometheus text)."""
    response = httpx.get(f"{url}/metrics.json", timeout=10)
    assert response.status_code == 200
    return response.json()




def test_prometheus_metrics_count_a_request_per_model(endpoint: str) -> None:
    name = model_hash("market-de.tar.gz")  # the model server's name for the key
    ok = ("scorer_requests_total", frozenset({("model", name), ("code", "200")}))
    before = scrape(endpoint).get(ok, 0.0)
    assert invoke(endpoint, "market-de.tar.gz").status_code == 200
    after = scrape(endpoint)
    assert after[ok] == before + 1
    info = ("scorer_cache_model_info", frozenset({("model", name), ("key", "market-de.tar.gz")}))
    assert after[info] == 1


def test_routes_by_custom_attribute_and_default(endpoint: str) -> None:
    de = invoke(endpoint, "market-de.tar.gz")
    assert de.status_code == 200, de.text
    assert de.json()["model"] == "market-de"
    assert set(de.json()["scores"][0]) == {"appeal", "ctr"}
    default = invoke(endpoint, None)
    assert default.status_code == 200, default.text
    assert default.json()["model"] == "market-fr"


def test_cold_load_then_warm_hit(endpoint: str) -> None:
    before = metrics(endpoint)
    assert invoke(endpoint, "market-it.tar.gz").status_code == 200
    after_cold = metrics(endpoint)
    assert after_cold["loads"] == before["loads"] + 1
    assert invoke(endpoint, "market-it.tar.gz").status_code == 200
    after_warm = metrics(endpoint)
    assert after_warm["loads"] == after_cold["loads"]
    assert after_warm["hits"] == after_cold["hits"] + 1


def test_least_recently_used_model_is_evicted_at_the_count_limit(endpoint: str) -> None:
    for key in ("market-fr.tar.gz", "market-de.tar.gz", "market-it.tar.gz"):
        assert invoke(endpoint, key).status_code == 200
    state = metrics(endpoint)
    assert state["resident_models"] == ["market-de.tar.gz", "market-it.tar.gz"]
    assert state["evictions"] >= 1
    again = invoke(endpoint, "market-fr.tar.gz")
    assert again.status_code == 200 and again.json()["model"] == "market-fr"
    assert metrics(endpoint)["resident_models"] == ["market-it.tar.gz", "market-fr.tar.gz"]


def test_concurrent_first_requests_cause_exactly_one_load(endpoint: str) -> None:
    before = metrics(endpoint)["loads"]
    results: list[int] = []
    barrier = threading.Barrier(8)

    def first_request() -> None:
        barrier.wait()
        results.append(invoke(endpoint, "market-es.tar.gz").status_code)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert metrics(endpoint)["loads"] == before + 1


def test_missing_model_is_404_with_a_clear_message(endpoint: str) -> None:
    response = invoke(endpoint, "no-such-model.tar.gz")
    assert response.status_code == 404
    assert "no-such-model.tar.gz" in response.json()["message"]


def test_unsafe_key_is_400(endpoint: str) -> None:
    response = invoke(endpoint, "../outside.tar.gz")
    assert response.status_code == 400


@pytest.mark.parametrize("key", ["evil.tar.gz", "garbage.tar.gz"])
def test_bad_archive_is_4xx_and_others_keep_serving(endpoint: str, key: str) -> None:
    response = invoke(endpoint, key)
    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text
    assert invoke(endpoint, "market-de.tar.gz").status_code == 200


def test_model_errors_pass_through(endpoint: str) -> None:
    response = httpx.post(
        f"{endpoint}/invocations",
        content=b"not an image",
        headers={
            "Content-Type": "image/jpeg",
            "X-Amzn-SageMaker-Custom-Attributes": "target_model=market-de.tar.gz",
        },
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["type"] == "BadRequestError"


def test_sigterm_stops_the_gateway_and_its_model_server(s3: str, tmp_path: Path) -> None:
    port = free_loopback_port()
    env = {
        **os.environ,
        "SCORER_MODEL_PREFIX": f"s3://{BUCKET}/{PREFIX}",
        "SCORER_CACHE_DIR": str(tmp_path / "cache"),
        "SCORER_RUN_DIR": str(tmp_path / "run"),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "serve", "--bind", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ping: int | str = "no answer"
        deadline = time.monotonic() + 120  # a bound on waiting for readiness, not a measurement
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ping = httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code
            except httpx.HTTPError as exc:
                ping = type(exc).__name__
            if ping == 200:
                break
            time.sleep(0.5)
        assert ping == 200, f"/ping never answered 200 (last: {ping}, exit code {process.poll()})"
        tree = psutil.Process(process.pid).children(recursive=True)
        assert any("ModelServer" in " ".join(p.cmdline()) for p in tree)
        process.terminate()
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 60  # children exit after the parent: wait, bounded
        while _running(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running(tree) == []
    finally:
        stop_tree(process)


def _running(processes: list[psutil.Process]) -> list[int]:
    """The pids among ``processes`` still running (zombies count as gone)."""
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return alive

"""``scorer local`` as a user runs it, serving an S3 model prefix from a real S3-compatible server.

moto runs in server mode (a real HTTP S3 endpoint on a free port); archives are uploaded
with boto3. The emulator is the ``scorer local`` command in a subprocess, configured the
standard AWS way (``AWS_ENDPOINT_URL_S3``, credentials from the environment); it starts
the model server itself and stops it on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest

from scorer.cache import model_hash
from scorer.models.archive import pack_directory
from scorer.modelserver.ports import free_loopback_port
from tests.support.models import creative_model_dir, image_bytes
from tests.support.s3 import FAKE_AWS, moto_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUCKET = "creative-models"
PREFIX = "endpoints/scorer/"


@dataclass
class Running:
    """The ``scorer local`` process and what it printed."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    model_server_pids: list[int]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(s3_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    s3.create_bucket(Bucket=BUCKET)
    build = tmp_path_factory.mktemp("build")
    models = {
        "creative-v3.tar.gz": creative_model_dir(build, "creative-v3", seed=1),
        "market/fr.tar.gz": creative_model_dir(build, "market-fr", heads=("ctr",), seed=2),
    }
    for key, model_dir in models.items():
        archive = build / f"{model_hash(key)}.tar.gz"
        pack_directory(model_dir, archive)
        s3.upload_file(str(archive), BUCKET, PREFIX + key)
    s3.put_object(Bucket=BUCKET, Key="outside-the-prefix.tar.gz", Body=b"not served")
    return BUCKET


def _scorer_executable() -> str:
    candidate = Path(sys.executable).parent / "scorer"
    return str(candidate) if candidate.exists() else "scorer"


@pytest.fixture(scope="module")
def emulator(
    bucket: str, s3_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    port = free_loopback_port()
    log = tmp_path_factory.mktemp("cli") / "scorer-local.log"
    env = {
        **os.environ,
        **FAKE_AWS,
        "AWS_ENDPOINT_URL_S3": s3_url,
        "SCORER_THREADS_PER_WORKER": "1",
    }
    command = [
        _scorer_executable(), "local",
        "--model-prefix", f"s3://{bucket}/{PREFIX}",
        "--port", str(port),
        "--endpoint-name", "creative-scoring",
        "--max-memory", "1",  # every model is over budget: each new one evicts the last
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    running = Running(process, f"http://127.0.0.1:{port}", log, [])
    try:
        deadline = time.monotonic() + 180
        while "is ready at" not in running.output():
            assert process.poll() is None, running.output()[-3000:]
            assert time.monotonic() < deadline, "scorer local did not become ready"
            time.sleep(0.2)
        running.model_server_pids = [p.pid for p in psutil.Process(process.pid).children()]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in running.model_server_pids:  # never leave a model server behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def url(emulator: Running) -> str:
    return emulator.url


def invoke(runtime: Any, target: str) -> dict[str, Any]:
    response = runtime.invoke_endpoint(
        EndpointName="creative-scoring",
        TargetModel=target,
        ContentType="image/jpeg",
        Body=image_bytes(),
    )
    assert response["ContentType"] == "application/json"
    return json.loads(response["Body"].read())


def cache_stats(emulator: Running) -> dict[str, Any]:
    return httpx.get(f"{emulator.url}/_scorer/cache", timeout=10).json()


def test_the_printed_boto3_one_liner_works(emulator: Running, tmp_path: Path) -> None:
    match = re.search(r"^  (python -c .+)$", emulator.output(), re.MULTILINE)
    assert match, emulator.output()[-2000:]
    one_liner = match.group(1)
    assert f"endpoint_url='{emulator.url}'" in one_liner
    assert "EndpointName='creative-scoring'" in one_liner
    assert "TargetModel='creative-v3.tar.gz'" in one_liner
    (tmp_path / "creative.jpg").write_bytes(image_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", one_liner], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "creative-v3"
    assert shlex.split(one_liner)[0] == "python"


def test_cold_load_from_s3_then_warm_hit(runtime: Any, emulator: Running) -> None:
    before = cache_stats(emulator)["cache"]
    first = invoke(runtime, "creative-v3.tar.gz")
    second = invoke(runtime, "creative-v3.tar.gz")
    assert first == second and first["model"] == "creative-v3"
    after = cache_stats(emulator)["cache"]
    assert after["hits"] == before["hits"] + 2 - (after["loads"] - before["loads"])
    assert after["resident_models"] == ["creative-v3.tar.gz"]


def test_memory_budget_evicts_the_least_recently_used_model(
    runtime: Any, emulator: Running
) -> None:
    invoke(runtime, "creative-v3.tar.gz")
    before = cache_stats(emulator)
    assert invoke(runtime, "market/fr.tar.gz")["model"] == "market-fr"
    after = cache_stats(emulator)
    assert after["cache"]["resident_models"] == ["market/fr.tar.gz"]
    assert after["cache"]["evictions"] == before["cache"]["evictions"] + 1
    (resident,) = after["resident"]
    # the footprint is the worker's measured memory, not the archive's size
    assert resident["footprint"]["host_memory"] > 20 * 1024 * 1024
    assert resident["footprint"]["host_memory"] > 10 * resident["extracted_bytes"]
    assert invoke(runtime, "creative-v3.tar.gz")["model"] == "creative-v3"  # reloads


def test_a_key_missing_from_the_bucket_is_a_validation_error(runtime: Any) -> None:
    for target in ("creative-v9.tar.gz", "../outside-the-prefix.tar.gz"):
        with pytest.raises(runtime.exceptions.ValidationError):
            invoke(runtime, target)


def test_sigterm_stops_the_emulator_and_its_model_server(emulator: Running) -> None:
    run_dir = re.search(r"Current directory: (\S+)/mms", emulator.output())
    assert emulator.model_server_pids
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.process.wait(60) == 0
    for pid in emulator.model_server_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emulator.url}/ping", timeout=2)
    if run_dir:  # the temporary run directory (model server files, cache) is removed
        assert not Path(run_dir.group(1)).exists()

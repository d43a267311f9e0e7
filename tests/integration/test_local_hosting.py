"""The emulator's hosting options with real boto3, real archives and the real model server.

Two emulators: one hosts inference components on a directory prefix and captures every
invocation to S3 (moto in server mode, reached the standard AWS way through
``AWS_ENDPOINT_URL_S3``); the other is a serverless single-model endpoint with
``MaxConcurrency`` 1 whose model can be held mid-request (it waits for a file), so that a
second invocation meets a full endpoint without any timing in the test.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from scorer.cache import CacheSettings
from scorer.local.capture import open_capture
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory
from tests.support.clients import runtime_client
from tests.support.models import ECHO_SCRIPT, add_code, creative_model_dir, image_bytes
from tests.support.s3 import s3_bucket
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUCKET = "monitoring"
CAPTURE = f"s3://{BUCKET}/datacapture"
IC_ENDPOINT = "creatives-ic"
SERVERLESS_ENDPOINT = "creatives-serverless"
LIMIT = 4 * 1024 * 1024

# Echoes the body size; a body "hold:<dir>" makes it wait, mid-request, until <dir>/release
# exists (after writing <dir>/entered), so a test can keep one invocation in flight; a body
# "big:<n>" answers about n bytes.
HOLD_SCRIPT = """
import json
import time
from pathlib import Path

def input_fn(body, content_type, context):
    if body.startswith(b"hold:"):
        gate = Path(body[5:].decode())
        (gate / "entered").touch()
        while not (gate / "release").exists():
            time.sleep(0.05)
    if body.startswith(b"big:"):
        return {"pad": "x" * int(body[4:])}
    return {"n": len(body)}

def predict_fn(data, model):
    return data

def output_fn(prediction, accept, context):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with s3_bucket(BUCKET) as client:  # the emulator's boto3 finds S3 the standard way
        yield client


@pytest.fixture(scope="module")
def components(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    build = tmp_path_factory.mktemp("build")
    prefix = tmp_path_factory.mktemp("prefix")
    (prefix / "market").mkdir()
    pack_directory(creative_model_dir(build, "creative-v3", seed=1), prefix / "creative-v3.tar.gz")
    pack_directory(
        creative_model_dir(build, "market-fr", heads=("ctr",), seed=2),
        prefix / "market" / "fr.tar.gz",
    )
    pack_directory(add_code(creative_model_dir(build, "echo"), ECHO_SCRIPT), prefix / "echo.tar.gz")
    settings = LocalSettings(
        port=0,
        endpoint_name=IC_ENDPOINT,
        cache=CacheSettings(model_prefix=str(prefix), max_models=3),
        run_dir=tmp_path_factory.mktemp("run"),
        inference_components={
            "scorer": "creative-v3.tar.gz",
            "market-fr": "market/fr.tar.gz",
            "echo": "echo.tar.gz",
        },
        data_capture=CAPTURE,
        capture_json_content_types=("application/json",),
    )
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running() as url:
        yield runtime_client(url)


@pytest.fixture(scope="module")
def serverless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    build = tmp_path_factory.mktemp("build")
    settings = LocalSettings(
        port=0,
        endpoint_name=SERVERLESS_ENDPOINT,
        model_dir=add_code(creative_model_dir(build, "hold"), HOLD_SCRIPT),
        run_dir=tmp_path_factory.mktemp("run"),
        serverless_memory_mb=2048,
        serverless_max_concurrency=1,
    )
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running() as url:
        yield runtime_client(url)


def _error(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    response: dict[str, Any] = raised.value.response
    return response


# ---------------------------------------------------------------- inference components


def test_the_component_name_picks_its_archive(components: Any) -> None:
    creative = image_bytes("JPEG", seed=5)
    answers = {
        name: json.loads(
            components.invoke_endpoint(
                EndpointName=IC_ENDPOINT,
                InferenceComponentName=name,
                ContentType="image/jpeg",
                Body=creative,
            )["Body"].read()
        )
        for name in ("scorer", "market-fr")
    }
    assert answers["scorer"]["model"] == "creative-v3"
    assert set(answers["scorer"]["scores"][0]) == {"appeal", "clarity"}
    assert answers["market-fr"]["model"] == "market-fr"
    assert set(answers["market-fr"]["scores"][0]) == {"ctr"}


def test_an_unknown_component_is_a_validation_error(components: Any) -> None:
    error = _error(
        components.invoke_endpoint,
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="nope",
        Body=b"x",
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert error["Error"]["Message"] == (
        f"Inference component nope of account 000000000000 not found on endpoint {IC_ENDPOINT}."
    )


def test_a_component_endpoint_needs_the_header_and_refuses_target_model(components: Any) -> None:
    missing = _error(components.invoke_endpoint, EndpointName=IC_ENDPOINT, Body=b"x")
    assert missing["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert missing["Error"]["Code"] == "ValidationError"
    assert missing["Error"]["Message"].startswith(
        "Inference Component Name header is required for endpoints to which you plan to "
        "deploy inference components."
    )
    both = _error(
        components.invoke_endpoint,
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="scorer",
        TargetModel="creative-v3.tar.gz",
        Body=b"x",
    )
    assert both["Error"]["Code"] == "ValidationError"
    assert "TargetModel is not supported" in both["Error"]["Message"]


# ---------------------------------------------------------------- data capture


def _capture_records(s3: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    def listed() -> list[str]:
        found = s3.list_objects_v2(Bucket=BUCKET, Prefix="datacapture/").get("Contents", [])
        return [item["Key"] for item in found]

    def records() -> list[tuple[str, dict[str, Any]]]:
        out = []
        for key in listed():
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            out += [(key, json.loads(line)) for line in body.splitlines()]
        return out

    wait_for(lambda: len(records()) >= count, 120, f"{count} capture records in S3")
    return records()


def test_capture_records_in_s3_hold_the_invocations(components: Any, s3: Any) -> None:
    creative = image_bytes("JPEG", seed=8)
    answer = components.invoke_endpoint(
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="scorer",
        ContentType="image/jpeg",
        Accept="application/json",
        InferenceId="creative-8",
        Body=creative,
    )["Body"].read()
    echo_body = b'{"creative": 8}'
    echoed = components.invoke_endpoint(
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="echo",
        ContentType="application/json",
        Body=echo_body,
    )["Body"].read()
    assert json.loads(echoed)["n"] == len(echo_body)

    records = _capture_records(s3, 2)
    by_id = {record["eventMetadata"].get("inferenceId"): (key, record) for key, record in records}
    key, record = by_id["creative-8"]
    assert re.fullmatch(
        rf"datacapture/{IC_ENDPOINT}/AllTraffic/\d{{4}}/\d\d/\d\d/\d\d/"
        r"\d\d-\d\d-\d{3}-[0-9a-f-]{36}\.jsonl",
        key,
    )
    assert record["eventVersion"] == "0"
    assert uuid.UUID(record["eventMetadata"]["eventId"])
    at = datetime.datetime.strptime(record["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert key.split("/")[3:7] == at.strftime("%Y/%m/%d/%H").split("/")
    sent, got = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert (sent["observedContentType"], sent["mode"], sent["encoding"]) == (
        "image/jpeg",
        "INPUT",
        "BASE64",
    )
    assert base64.b64decode(sent["data"]) == creative
    assert (got["mode"], got["encoding"]) == ("OUTPUT", "JSON")
    assert got["observedContentType"].startswith("application/json")
    assert json.loads(got["data"]) == json.loads(answer)

    echo_records = [
        record
        for _, record in records
        if record["captureData"]["endpointInput"].get("data") == echo_body.decode()
    ]
    assert len(echo_records) == 1
    echo_input = echo_records[0]["captureData"]["endpointInput"]
    assert echo_input["encoding"] == "JSON"
    assert "inferenceId" not in echo_records[0]["eventMetadata"]
    assert json.loads(echo_records[0]["captureData"]["endpointOutput"]["data"]) == json.loads(
        echoed
    )


def test_failed_invocations_are_not_captured(components: Any, s3: Any) -> None:
    _error(
        components.invoke_endpoint,
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="scorer",
        ContentType="image/jpeg",
        InferenceId="not-an-image",
        Body=b"not an image",
    )
    components.invoke_endpoint(
        EndpointName=IC_ENDPOINT,
        InferenceComponentName="echo",
        ContentType="text/plain",
        InferenceId="after-the-failure",
        Body=b"marker",
    )

    def ids() -> set[str | None]:
        return {r["eventMetadata"].get("inferenceId") for _, r in _capture_records(s3, 1)}

    wait_for(lambda: "after-the-failure" in ids(), 120, "the marker's capture record")
    # records are written in order: the failure, sent first, would be there by now
    assert "not-an-image" not in ids()


def test_records_still_queued_are_written_to_s3_on_close(s3: Any) -> None:
    capture = open_capture(f"s3://{BUCKET}/closing", "ep", "AllTraffic")
    assert capture.offer(b"in", "text/plain", b"out", "text/plain", "last-one")
    capture.close()  # well before the flush interval
    (item,) = s3.list_objects_v2(Bucket=BUCKET, Prefix="closing/ep/AllTraffic/")["Contents"]
    (line,) = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().splitlines()
    record = json.loads(line)
    assert record["eventMetadata"]["inferenceId"] == "last-one"
    assert base64.b64decode(record["captureData"]["endpointOutput"]["data"]) == b"out"


# ---------------------------------------------------------------- serverless


def test_serverless_refuses_a_body_over_4_mb_and_serves_4_mb(serverless: Any) -> None:
    error = _error(
        serverless.invoke_endpoint,
        EndpointName=SERVERLESS_ENDPOINT,
        ContentType="application/octet-stream",
        Body=b"\0" * (LIMIT + 1),
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert f"limit of {LIMIT} bytes" in error["Error"]["Message"]
    answer = serverless.invoke_endpoint(
        EndpointName=SERVERLESS_ENDPOINT,
        ContentType="application/octet-stream",
        Body=b"\0" * LIMIT,
    )
    assert json.loads(answer["Body"].read()) == {"n": LIMIT}


def test_serverless_refuses_an_answer_over_4_mb(serverless: Any) -> None:
    error = _error(
        serverless.invoke_endpoint, EndpointName=SERVERLESS_ENDPOINT, Body=f"big:{LIMIT}".encode()
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["Error"]["Code"] == "ModelError"
    assert f"larger than the serverless limit of {LIMIT} bytes" in error["Error"]["Message"]
    small = serverless.invoke_endpoint(EndpointName=SERVERLESS_ENDPOINT, Body=b"big:10")
    assert json.loads(small["Body"].read()) == {"pad": "x" * 10}


def test_serverless_throttles_beyond_max_concurrency(serverless: Any, tmp_path: Path) -> None:
    held = f"hold:{tmp_path}".encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(serverless.invoke_endpoint, EndpointName=SERVERLESS_ENDPOINT, Body=held)
        try:
            wait_for(
                lambda: (tmp_path / "entered").exists() or first.done(),
                120,
                "the first invocation to reach the model",
            )
            assert not first.done(), first.result()
            error = _error(serverless.invoke_endpoint, EndpointName=SERVERLESS_ENDPOINT, Body=b"x")
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert error["Error"]["Code"] == "ThrottlingException"
            assert "MaxConcurrency of 1" in error["Error"]["Message"]
        finally:
            (tmp_path / "release").touch()
        assert json.loads(first.result()["Body"].read()) == {"n": len(held)}
    again = serverless.invoke_endpoint(EndpointName=SERVERLESS_ENDPOINT, Body=b"xyz")
    assert json.loads(again["Body"].read()) == {"n": 3}


def test_a_component_name_on_an_endpoint_without_components(serverless: Any) -> None:
    error = _error(
        serverless.invoke_endpoint,
        EndpointName=SERVERLESS_ENDPOINT,
        InferenceComponentName="scorer",
        Body=b"x",
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert "does not host inference components" in error["Error"]["Message"]

"""InvokeEndpointAsync's queue against ``scorer local``: RequestTTLSeconds,
InvocationTimeoutSeconds, a large input, and SNS notifications, with real boto3 and a
real moto server (S3, SNS and SQS, reached through ``AWS_ENDPOINT_URL_*``).

The model echoes the size of what it received; a body ``wait:<path>`` makes it wait until
that file exists, so a test holds the endpoint's one async slot
(``async_max_concurrency=1``) for as long as it needs without timing anything. The
emulator's TTL clock is moved by the test (``AsyncInference.clock``) instead of waiting
the platform's minimum of 60 s. Each topic has an SQS queue subscribed (raw delivery), so
the test reads back exactly the message SageMaker's format puts on the topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from scorer.local.asynchronous import AsyncInference
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from tests.support.clients import runtime_client
from tests.support.models import add_code, creative_model_dir, image_bytes
from tests.support.s3 import FAKE_AWS, moto_server, s3_object, written_object
from tests.support.sdk import CLIENTS as SDK_CLIENTS
from tests.support.sdk import PREFIX as SDK_PREFIX
from tests.support.sdk import sdk_python
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ENDPOINT = "creatives-queue"
BUCKET = "async-queue"
OUTPUT = f"s3://{BUCKET}/results/"
FAILURES = f"s3://{BUCKET}/failures/"
LARGE = 24 * 1024 * 1024  # over SageMaker's 6 MB real-time limit, far over the inline body's

GATED = """
import json, os, time

def input_fn(body, content_type, context):
    return bytes(body)

def predict_fn(data, model):
    if data.startswith(b"wait:"):
        gate = data[5:].decode()
        while not os.path.exists(gate):
            time.sleep(0.05)
    return data

def output_fn(prediction, accept, context):
    return json.dumps({"size": len(prediction), "head": prediction[:16].hex()}), "application/json"
"""


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    """A moto server with the bucket, two topics and a queue subscribed to each."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        for key, value in FAKE_AWS.items():
            patch.setenv(key, value)
        for service in ("S3", "SNS", "SQS"):
            patch.setenv(f"AWS_ENDPOINT_URL_{service}", endpoint)
        session = boto3.session.Session()
        s3, sns, sqs = (session.client(name) for name in ("s3", "sns", "sqs"))
        s3.create_bucket(Bucket=BUCKET)
        topics, queues = {}, {}
        for kind in ("success", "error"):
            topic = sns.create_topic(Name=f"scores-{kind}")["TopicArn"]
            queue = sqs.create_queue(QueueName=f"scores-{kind}")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            sns.subscribe(
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
            )
            topics[kind], queues[kind] = topic, queue
        yield {"s3": s3, "sqs": sqs, "topics": topics, "queues": queues}


@pytest.fixture(scope="module")
def endpoint(
    world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    build = tmp_path_factory.mktemp("build")
    model_dir = add_code(creative_model_dir(build, "gated", heads=("appeal",)), GATED)
    settings = LocalSettings(
        port=0,
        endpoint_name=ENDPOINT,
        model_dir=model_dir,
        run_dir=tmp_path_factory.mktemp("run"),
        async_output_path=OUTPUT,
        async_failure_path=FAILURES,
        async_max_concurrency=1,
        async_success_topic=world["topics"]["success"],
        async_error_topic=world["topics"]["error"],
    )
    environ = {
        **os.environ,
        "SCORER_THREADS_PER_WORKER": "1",
        "SAGEMAKER_MAX_REQUEST_SIZE": str(64 * 1024 * 1024),  # as an async endpoint sets it
    }
    local = LocalEndpoint(settings, environ)
    asynchronous: AsyncInference = local.start().state.asynchronous
    with local.running() as url:
        yield {
            "url": url,
            "runtime": runtime_client(url),
            "asynchronous": asynchronous,
            "gates": tmp_path_factory.mktemp("gates"),
        }


def _notification(world: dict[str, Any], kind: str, inference_id: str) -> dict[str, Any]:
    """The message with ``inference_id`` on the ``kind`` topic's queue (others are kept)."""
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        answer = world["sqs"].receive_message(
            QueueUrl=world["queues"][kind], MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for item in answer.get("Messages", []):
            message = json.loads(item["Body"])
            if message["inferenceId"] == inference_id:
                found.append(message)
                world["sqs"].delete_message(
                    QueueUrl=world["queues"][kind], ReceiptHandle=item["ReceiptHandle"]
                )
        return bool(found)

    wait_for(arrived, 60, f"the {kind} notification of {inference_id}")
    return found[0]


def _gate(endpoint: dict[str, Any], name: str) -> tuple[Path, bytes]:
    gate: Path = endpoint["gates"] / name
    return gate, f"wait:{gate}".encode()


def test_success_is_published_to_the_success_topic(
    world: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    creative = image_bytes("JPEG", seed=11)
    world["s3"].put_object(Bucket=BUCKET, Key="inputs/c11.jpg", Body=creative)
    response = endpoint["runtime"].invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=f"s3://{BUCKET}/inputs/c11.jpg",
        ContentType="image/jpeg",
        Accept="application/json",
        InferenceId="c11",
    )
    written = json.loads(written_object(world["s3"], response["OutputLocation"]))
    assert written == {"size": len(creative), "head": creative[:16].hex()}
    message = _notification(world, "success", "c11")
    assert message["invocationStatus"] == "Completed"
    assert message["awsRegion"] == "us-east-1"
    assert message["requestParameters"] == {
        "contentType": "image/jpeg",
        "endpointName": ENDPOINT,
        "inputLocation": f"s3://{BUCKET}/inputs/c11.jpg",
        "accept": "application/json",
    }
    assert message["responseParameters"] == {
        "contentType": "application/json",
        "outputLocation": f"{OUTPUT}c11.out",
    }
    assert (message["eventVersion"], message["eventSource"], message["eventName"]) == (
        "1.0",
        "aws:sagemaker",
        "InferenceResult",
    )
    assert message["receivedTime"] <= message["eventTime"]
    assert message["eventTime"].endswith("Z")


def test_a_request_past_its_ttl_in_the_queue_fails_and_is_published_as_failed(
    world: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    asynchronous: AsyncInference = endpoint["asynchronous"]
    runtime = endpoint["runtime"]
    now = [1_000_000.0]
    asynchronous.clock = lambda: now[0]
    gate, holding = _gate(endpoint, "ttl")
    try:
        first = runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, Body=holding, ContentType="text/plain", InferenceId="holder"
        )  # takes the one slot until the gate opens
        second = runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            Body=b"queued behind the holder",
            ContentType="text/plain",
            InferenceId="expires",
            RequestTTLSeconds=60,
        )
        now[0] += 61  # a minute and a second in the queue
        gate.touch()
        answer = json.loads(written_object(world["s3"], first["OutputLocation"]))
        assert answer["size"] == len(holding)
        failure = written_object(world["s3"], second["FailureLocation"]).decode()
    finally:
        gate.touch()
        asynchronous.clock = time.monotonic
    assert "expired" in failure and "RequestTTLSeconds (60 s)" in failure
    assert s3_object(world["s3"], second["OutputLocation"]) is None
    message = _notification(world, "error", "expires")
    assert message["invocationStatus"] == "Failed"
    assert "RequestTTLSeconds (60 s)" in message["failureReason"]
    assert message["responseParameters"] == {"failureLocation": f"{FAILURES}expires-error.out"}


def test_an_invocation_past_its_timeout_fails(
    world: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    gate, holding = _gate(endpoint, "timeout")
    try:
        response = endpoint["runtime"].invoke_endpoint_async(
            EndpointName=ENDPOINT,
            Body=holding,
            ContentType="text/plain",
            InferenceId="too-slow",
            InvocationTimeoutSeconds=1,
        )
        failure = written_object(world["s3"], response["FailureLocation"]).decode()
    finally:
        gate.touch()  # frees the model server's worker for the next test
    assert "InvocationTimeoutSeconds (1 s)" in failure
    assert s3_object(world["s3"], response["OutputLocation"]) is None
    assert "InvocationTimeoutSeconds" in _notification(world, "error", "too-slow")["failureReason"]


def test_a_large_input_reaches_the_model_whole(
    world: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    large = os.urandom(LARGE)
    world["s3"].put_object(Bucket=BUCKET, Key="inputs/large.bin", Body=large)
    response = endpoint["runtime"].invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=f"s3://{BUCKET}/inputs/large.bin",
        ContentType="application/octet-stream",
        InferenceId="large",
    )
    written = json.loads(written_object(world["s3"], response["OutputLocation"]))
    assert written == {"size": LARGE, "head": large[:16].hex()}
    assert s3_object(world["s3"], response["FailureLocation"]) is None
    # and the endpoint is still itself: a small request right after is answered
    small = endpoint["runtime"].invoke_endpoint(
        EndpointName=ENDPOINT, Body=b"still here", ContentType="text/plain"
    )
    assert json.loads(small["Body"].read())["size"] == len(b"still here")


def _sdk_client(
    endpoint: dict[str, Any], tmp_path: Path, body: bytes, name: str, *extra: str
) -> subprocess.Popen[str]:
    """``tests/support/sdk_v2_async.py``, a user's program with the SageMaker Python SDK v2's
    AsyncPredictor, in the SDK's own venv, against the emulator (S3: the environment's moto)."""
    body_file = tmp_path / f"{name}.body"
    body_file.write_bytes(body)
    return subprocess.Popen(
        [str(sdk_python("v2")), str(SDK_CLIENTS["v2"]),
         "--runtime-url", endpoint["url"], "--endpoint", ENDPOINT, "--bucket", BUCKET,
         "--body-file", str(body_file), "--input-path", f"s3://{BUCKET}/sdk/{name}",
         "--inference-id", f"sdk-{name}", *extra],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip


def _lines(client: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """The client's own lines (the SDK prints some of its own)."""
    out, _ = client.communicate(timeout=180)
    assert client.returncode == 0, out
    return [_said(line) for line in out.splitlines() if line.startswith(SDK_PREFIX)]


def _said(line: str) -> dict[str, Any]:
    said: dict[str, Any] = json.loads(line.removeprefix(SDK_PREFIX))
    return said


def test_the_sagemaker_sdks_async_predictor_gets_the_result(
    world: dict[str, Any], endpoint: dict[str, Any], tmp_path: Path
) -> None:
    creative = image_bytes("JPEG", seed=12)
    paths, answer = _lines(_sdk_client(endpoint, tmp_path, creative, "c12.jpg"))
    assert paths == {
        "output_path": f"{OUTPUT}sdk-c12.jpg.out",
        "failure_path": f"{FAILURES}sdk-c12.jpg-error.out",
    }
    assert answer == {"result": {"size": len(creative), "head": creative[:16].hex()}}
    assert s3_object(world["s3"], f"s3://{BUCKET}/sdk/c12.jpg") == creative  # uploaded by the SDK


def test_the_sagemaker_sdk_raises_the_failure_objects_error(
    world: dict[str, Any], endpoint: dict[str, Any], tmp_path: Path
) -> None:
    gate, holding = _gate(endpoint, "sdk-timeout")
    try:
        client = _sdk_client(
            endpoint, tmp_path, holding, "slow.bin",
            "--content-type", "application/octet-stream", "--invocation-timeout", "1", "--text",
        )  # fmt: skip
        assert client.stdout is not None
        line = client.stdout.readline()
        while line and not line.startswith(SDK_PREFIX):
            line = client.stdout.readline()
        paths = _said(line)
        written_object(world["s3"], paths["failure_path"])
    finally:
        gate.touch()
    (answer,) = _lines(client)
    assert answer["error"] == "AsyncInferenceModelError", answer
    assert "InvocationTimeoutSeconds (1 s)" in answer["message"]


def test_the_sagemaker_sdk_v3s_invoke_async_names_where_the_result_is_written(
    world: dict[str, Any], endpoint: dict[str, Any], tmp_path: Path
) -> None:
    """``tests/support/sdk_v3_async.py``: v3's ``Endpoint.invoke_async``, which reaches the
    emulator through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, parses its 202 into the inference
    id and both locations, and the output is there."""
    creative = image_bytes("JPEG", seed=13)
    body_file = tmp_path / "c13.jpg"
    body_file.write_bytes(creative)
    run = subprocess.run(
        [str(sdk_python("v3")), str(SDK_CLIENTS["v3"]), "--endpoint", ENDPOINT,
         "--body-file", str(body_file), "--input-location", f"s3://{BUCKET}/sdk-v3/c13.jpg",
         "--inference-id", "sdk-v3-c13"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint["url"]},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    answer, result = (_said(line) for line in lines if line.startswith(SDK_PREFIX))
    assert answer == {
        "inference_id": "sdk-v3-c13",
        "output_location": f"{OUTPUT}sdk-v3-c13.out",
        "failure_location": f"{FAILURES}sdk-v3-c13-error.out",
    }
    assert json.loads(result["output"]) == {"size": len(creative), "head": creative[:16].hex()}

"""scorer.local.asynchronous without a model server: what InvokeEndpointAsync accepts and
refuses, where results and failures go (an in-memory S3), and the settings it needs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from scorer.cache.settings import CacheSettings
from scorer.errors import ConfigError
from scorer.local.asynchronous import AsyncInference, AsyncJob
from scorer.local.notifications import Notifier
from scorer.local.settings import LocalSettings, load_local_settings
from scorer.modelserver.client import Invocation

OUTPUT = "s3://bucket/out/"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:scores"


class FakeS3:
    """put_object/get_object on a dict, as boto3's S3 client answers them."""

    def __init__(self, objects: Mapping[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.types: dict[str, str] = {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        if f"{Bucket}/{Key}" not in self.objects:
            raise KeyError(f"NoSuchKey: {Key}")
        return {"Body": _Body(self.objects[f"{Bucket}/{Key}"])}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803
        self.objects[f"{Bucket}/{Key}"] = Body
        self.types[f"{Bucket}/{Key}"] = ContentType


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def settings(**changes: Any) -> LocalSettings:
    values: dict[str, Any] = {
        "endpoint_name": "e",
        "model_dir": Path("model"),
        "async_output_path": OUTPUT,
        **changes,
    }
    return LocalSettings(**values)


async def _echo(invocation: Invocation) -> httpx.Response:
    if invocation.body == b"bad":
        return httpx.Response(400, json={"type": "BadRequestError", "message": "not an image"})
    answer = {"got": invocation.body.decode(), "type": invocation.content_type}
    return httpx.Response(200, json=answer)


def call(
    local: LocalSettings, headers: dict[str, str], body: bytes = b"", s3: FakeS3 | None = None
) -> tuple[httpx.Response, FakeS3]:
    """One async call through the app, run until its background work is done."""
    store = s3 or FakeS3()
    asynchronous = AsyncInference(local, _echo, lambda: store)
    app = Starlette(
        routes=[Route("/endpoints/{endpoint_name}/async-invocations", asynchronous.accept,
                      methods=["POST"])]
    )  # fmt: skip

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            response = await client.post(
                "/endpoints/e/async-invocations", content=body, headers=headers
            )
        await asynchronous.wait_idle()
        return response

    return asyncio.run(run()), store


def test_accepted_202_with_locations_and_the_answer_written() -> None:
    response, s3 = call(
        settings(),
        {"X-Amzn-SageMaker-Content-Type": "text/plain", "X-Amzn-SageMaker-Inference-Id": "i-1"},
        b"hello",
    )
    assert response.status_code == 202
    assert response.json() == {"InferenceId": "i-1"}
    assert response.headers["X-Amzn-SageMaker-OutputLocation"] == f"{OUTPUT}i-1.out"
    assert response.headers["X-Amzn-SageMaker-FailureLocation"] == f"{OUTPUT}i-1-error.out"
    assert json.loads(s3.objects["bucket/out/i-1.out"]) == {"got": "hello", "type": "text/plain"}
    assert s3.types["bucket/out/i-1.out"] == "application/json"
    assert "bucket/out/i-1-error.out" not in s3.objects


def test_input_is_read_from_s3_and_a_model_error_goes_to_the_failure_path() -> None:
    store = FakeS3({"in/bad.png": b"bad"})
    response, s3 = call(
        settings(async_failure_path="s3://bucket/failed"),
        {"X-Amzn-SageMaker-InputLocation": "s3://in/bad.png", "X-Amzn-SageMaker-Inference-Id": "b"},
        s3=store,
    )
    assert response.headers["X-Amzn-SageMaker-FailureLocation"] == "s3://bucket/failed/b-error.out"
    assert json.loads(s3.objects["bucket/failed/b-error.out"])["type"] == "BadRequestError"
    assert "bucket/out/b.out" not in s3.objects


def test_a_missing_input_is_written_as_a_failure() -> None:
    response, s3 = call(
        settings(),
        {"X-Amzn-SageMaker-InputLocation": "s3://in/gone", "X-Amzn-SageMaker-Inference-Id": "g"},
    )
    assert response.status_code == 202
    failure = s3.objects["bucket/out/g-error.out"].decode()
    assert failure.startswith("Failed to download the input from s3://in/gone")


@pytest.mark.parametrize(
    ("local", "headers", "body", "needle"),
    [
        (settings(endpoint_name="other"), {}, b"x", "Endpoint e of account"),
        (settings(async_output_path=None), {}, b"x", "not configured for asynchronous"),
        (
            LocalSettings(endpoint_name="e", cache=CacheSettings(model_prefix="s3://b/m/")),
            {},
            b"x",
            "not supported on multi-model endpoints",
        ),
        (settings(), {}, b"", "InputLocation or Body is required"),
        (
            settings(),
            {"X-Amzn-SageMaker-InputLocation": "s3://b/k"},
            b"x",
            "either InputLocation or Body",
        ),
        (
            settings(),
            {"X-Amzn-SageMaker-InputLocation": "https://b/k"},
            b"",
            "s3:// only",
        ),
        (settings(), {"X-Amzn-SageMaker-InputLocation": "ftp://b/k"}, b"", "s3:// or https://"),
        (settings(), {"X-Amzn-SageMaker-RequestTTLSeconds": "59"}, b"x", "between 60 and 21600"),
        (
            settings(),
            {"X-Amzn-SageMaker-InvocationTimeoutSeconds": "3601"},
            b"x",
            "between 1 and 3600",
        ),
        (settings(), {"X-Amzn-SageMaker-Filename": "a.b.c"}, b"x", "at most one dot"),
        (
            settings(),
            {"X-Amzn-SageMaker-S3OutputPathExtension": "s3://x"},
            b"x",
            "must not start with s3:",
        ),
        (settings(), {}, b"x" * 128_001, "at most 128000 bytes"),
    ],
)
def test_refused_as_validation_errors(
    local: LocalSettings, headers: dict[str, str], body: bytes, needle: str
) -> None:
    response, s3 = call(local, headers, body)
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationError"
    assert needle in response.json()["message"]
    assert s3.objects == {}


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"async_output_path": "out/"}, "s3://bucket/prefix/"),
        (
            {"async_output_path": None, "async_failure_path": "s3://bucket/f/"},
            "needs --async-output",
        ),
        ({"async_max_concurrency": 0}, "1 to 1000"),
        ({"async_success_topic": "my-topic"}, "must be an SNS topic ARN"),
        ({"async_error_topic": "arn:aws:sqs:us-east-1:123456789012:q"}, "SNS topic ARN"),
        (
            {"async_output_path": None, "async_error_topic": TOPIC},
            "--async-error-topic needs --async-output-path",
        ),
    ],
)
def test_settings_refuse_what_cannot_work(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        settings(**values)


def test_async_on_a_multi_model_endpoint_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="not supported on a multi-model endpoint"):
        load_local_settings(
            {"SCORER_LOCAL_ASYNC_OUTPUT_PATH": OUTPUT}, {"model_prefix": "s3://b/models/"}
        )


def test_settings_from_the_environment() -> None:
    local = load_local_settings(
        {
            "SCORER_LOCAL_ASYNC_OUTPUT_PATH": OUTPUT,
            "SCORER_LOCAL_ASYNC_FAILURE_PATH": "s3://bucket/failed/",
            "SCORER_LOCAL_ASYNC_MAX_CONCURRENCY": "2",
            "SCORER_LOCAL_ASYNC_SUCCESS_TOPIC": TOPIC,
        },
        {"model_dir": Path("model"), "async_error_topic": TOPIC + "-errors"},
    )
    assert local.async_output_path == OUTPUT
    assert local.async_failure_path == "s3://bucket/failed/"
    assert local.async_max_concurrency == 2
    assert (local.async_success_topic, local.async_error_topic) == (TOPIC, TOPIC + "-errors")


def _job(**changes: Any) -> AsyncJob:
    values: dict[str, Any] = {
        "inference_id": "t",
        "input_location": None,
        "body": b"hello",
        "content_type": "text/plain",
        "accept": None,
        "custom_attributes": None,
        "ttl_seconds": 60,
        "timeout_seconds": 900,
        "output_location": f"{OUTPUT}t.out",
        "failure_location": f"{OUTPUT}t-error.out",
        "received": time.monotonic(),
        **changes,
    }
    return AsyncJob(**values)


def test_a_request_past_its_ttl_is_written_as_expired() -> None:
    store = FakeS3()
    asynchronous = AsyncInference(settings(), _echo, lambda: store)
    asyncio.run(asynchronous._run(_job(received=time.monotonic() - 61)))
    assert "bucket/out/t.out" not in store.objects
    assert b"expired" in store.objects["bucket/out/t-error.out"]
    assert b"RequestTTLSeconds (60 s)" in store.objects["bucket/out/t-error.out"]


def test_an_invocation_past_its_timeout_is_written_as_a_failure() -> None:
    async def never(_invocation: Invocation) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    store = FakeS3()
    asynchronous = AsyncInference(settings(), never, lambda: store)
    asyncio.run(asynchronous._run(_job(timeout_seconds=1)))
    assert b"InvocationTimeoutSeconds (1 s)" in store.objects["bucket/out/t-error.out"]
    assert "bucket/out/t.out" not in store.objects


class FakeSNS:
    """publish() as boto3's SNS client takes it; ``fail``: raise as an unreachable SNS."""

    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.regions: list[str] = []
        self.fail = fail

    def client(self, region: str) -> FakeSNS:
        self.regions.append(region)
        return self

    def publish(self, TopicArn: str, Message: str) -> None:  # noqa: N803
        if self.fail:
            raise ConnectionError("no SNS here")
        self.published.append((TopicArn, json.loads(Message)))


def _notified(job: AsyncJob, sns: FakeSNS, invoke: Any = _echo) -> FakeS3:
    store = FakeS3({"in/bad.png": b"bad"})
    notifier = Notifier(TOPIC, TOPIC.replace("scores", "errors"), sns.client)
    asynchronous = AsyncInference(settings(), invoke, lambda: store, notifier)
    asyncio.run(asynchronous._run(job))
    return store


def test_a_success_publishes_the_inference_result_message_to_the_success_topic() -> None:
    sns = FakeSNS()
    _notified(_job(accept="application/json", received_at=1_700_000_000.25), sns)
    [(topic, message)] = sns.published
    assert topic == TOPIC and sns.regions == ["eu-west-1"]
    assert message["invocationStatus"] == "Completed"
    assert message["awsRegion"] == "eu-west-1"
    assert message["receivedTime"] == "2023-11-14T22:13:20.250Z"
    assert message["eventTime"] > message["receivedTime"]
    assert message["requestParameters"] == {
        "contentType": "text/plain",
        "endpointName": "e",
        "accept": "application/json",
    }
    assert message["responseParameters"] == {
        "contentType": "application/json",
        "outputLocation": f"{OUTPUT}t.out",
    }
    assert message["inferenceId"] == "t"
    assert (message["eventVersion"], message["eventSource"], message["eventName"]) == (
        "1.0",
        "aws:sagemaker",
        "InferenceResult",
    )
    assert "failureReason" not in message


def test_a_failure_publishes_failed_with_its_reason_to_the_error_topic() -> None:
    sns = FakeSNS()
    _notified(_job(body=None, input_location="s3://in/bad.png", content_type="image/png"), sns)
    [(topic, message)] = sns.published
    assert topic.endswith(":errors")
    assert message["invocationStatus"] == "Failed"
    assert "not an image" in message["failureReason"]
    assert message["requestParameters"]["inputLocation"] == "s3://in/bad.png"
    assert message["responseParameters"] == {"failureLocation": f"{OUTPUT}t-error.out"}


def test_no_topic_publishes_nothing_and_an_unreachable_sns_does_not_fail_the_request() -> None:
    sns = FakeSNS()
    store = FakeS3()
    notifier = Notifier(None, None, sns.client)
    asynchronous = AsyncInference(settings(), _echo, lambda: store, notifier)
    asyncio.run(asynchronous._run(_job()))
    assert sns.published == [] and sns.regions == []
    assert "bucket/out/t.out" in store.objects
    broken = FakeSNS(fail=True)
    store = _notified(_job(), broken)
    assert broken.published == []
    assert "bucket/out/t.out" in store.objects  # the answer is there all the same


def test_the_ttl_is_measured_on_the_injected_clock() -> None:
    now = [1000.0]
    store = FakeS3()
    asynchronous = AsyncInference(settings(), _echo, lambda: store, clock=lambda: now[0])
    job = _job(received=1000.0, ttl_seconds=60)
    now[0] = 1060.0
    asyncio.run(asynchronous._run(job))
    assert "bucket/out/t.out" in store.objects  # 60 s waited: still within its TTL
    now[0] = 1060.5
    asyncio.run(asynchronous._run(job))
    assert b"RequestTTLSeconds (60 s)" in store.objects["bucket/out/t-error.out"]

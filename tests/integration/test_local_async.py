"""InvokeEndpointAsync against ``scorer local``, with real boto3 and a real S3-compatible
server (moto in server mode, reached the standard AWS way: ``AWS_ENDPOINT_URL_S3``).

The emulator serves one model with ``async_output_path`` / ``async_failure_path``; each
test puts an input in the bucket, calls ``invoke_endpoint_async`` and reads what the
emulator wrote: the model's answer under the output path (the same answer
``invoke_endpoint`` gives), the model's error under the failure path, or, for an input
that is not there, a failure naming it (the call itself is accepted, as in AWS, where the
input is downloaded after the 202).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from tests.support.models import creative_model_dir, image_bytes
from tests.support.s3 import s3_bucket, s3_object, written_object

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUCKET = "async-inference"
OUTPUT = f"s3://{BUCKET}/results/"
FAILURES = f"s3://{BUCKET}/failures/"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with s3_bucket(BUCKET) as client:  # the emulator's boto3 finds S3 the standard way
        yield client


@pytest.fixture(scope="module")
def url(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build = tmp_path_factory.mktemp("build")
    settings = LocalSettings(
        port=0,
        endpoint_name="creatives-async",
        model_dir=creative_model_dir(build, "solo", heads=("appeal",)),
        run_dir=tmp_path_factory.mktemp("run"),
        async_output_path=OUTPUT,
        async_failure_path=FAILURES,
    )
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running() as url:
        yield url


def test_success_writes_the_models_answer_to_the_output_location(runtime: Any, s3: Any) -> None:
    creative = image_bytes("JPEG", seed=3)
    s3.put_object(Bucket=BUCKET, Key="inputs/creative-3.jpg", Body=creative)
    response = runtime.invoke_endpoint_async(
        EndpointName="creatives-async",
        InputLocation=f"s3://{BUCKET}/inputs/creative-3.jpg",
        ContentType="image/jpeg",
        Accept="application/json",
        InferenceId="creative-3",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "creative-3"
    assert response["OutputLocation"] == f"{OUTPUT}creative-3.out"
    assert response["FailureLocation"] == f"{FAILURES}creative-3-error.out"
    written = json.loads(written_object(s3, response["OutputLocation"]))
    direct = runtime.invoke_endpoint(
        EndpointName="creatives-async", ContentType="image/jpeg", Body=creative
    )
    assert written == json.loads(direct["Body"].read())
    assert written["model"] == "solo" and set(written["scores"][0]) == {"appeal"}
    assert s3_object(s3, response["FailureLocation"]) is None


def test_an_inline_body_and_a_generated_inference_id(runtime: Any, s3: Any) -> None:
    response = runtime.invoke_endpoint_async(
        EndpointName="creatives-async", Body=image_bytes("PNG", seed=4), ContentType="image/png"
    )
    inference_id = response["InferenceId"]
    assert len(inference_id) == 36  # a UUID, as the platform generates
    assert response["OutputLocation"] == f"{OUTPUT}{inference_id}.out"
    answer = json.loads(written_object(s3, response["OutputLocation"]))
    assert set(answer["scores"][0]) == {"appeal"}


def test_a_model_error_is_written_to_the_failure_location(runtime: Any, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="inputs/broken.png", Body=b"\x89PNG\r\n\x1a\n broken")
    response = runtime.invoke_endpoint_async(
        EndpointName="creatives-async",
        InputLocation=f"s3://{BUCKET}/inputs/broken.png",
        ContentType="image/png",
        InferenceId="broken",
    )
    failure = json.loads(written_object(s3, response["FailureLocation"]))
    assert failure["type"] == "BadRequestError"  # the model's own 400 answer
    assert s3_object(s3, response["OutputLocation"]) is None


def test_a_missing_input_is_accepted_then_reported_at_the_failure_location(
    runtime: Any, s3: Any
) -> None:
    missing = f"s3://{BUCKET}/inputs/not-there.jpg"
    response = runtime.invoke_endpoint_async(
        EndpointName="creatives-async",
        InputLocation=missing,
        ContentType="image/jpeg",
        InferenceId="not-there",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    failure = written_object(s3, response["FailureLocation"]).decode()
    assert f"Failed to download the input from {missing}" in failure
    assert "NoSuchKey" in failure
    assert s3_object(s3, response["OutputLocation"]) is None


def test_output_path_extension_and_filename(runtime: Any, s3: Any) -> None:
    response = runtime.invoke_endpoint_async(
        EndpointName="creatives-async",
        Body=image_bytes("JPEG", seed=5),
        ContentType="image/jpeg",
        S3OutputPathExtension="campaign-7",
        Filename="creative-5.json",
    )
    assert response["OutputLocation"] == f"{OUTPUT}campaign-7/creative-5.json"
    assert json.loads(written_object(s3, response["OutputLocation"]))["model"] == "solo"


def test_input_location_and_body_together_are_refused(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        runtime.invoke_endpoint_async(
            EndpointName="creatives-async",
            InputLocation=f"s3://{BUCKET}/inputs/creative-3.jpg",
            Body=b"x",
        )
    assert "either InputLocation or Body" in raised.value.response["Error"]["Message"]

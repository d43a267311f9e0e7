"""An async inference client written with the SageMaker Python SDK v2, as a user writes it.

Run by the tests with the SDK's own venv (:mod:`tests.support.sdk`), not with scorer's: it
imports only the SDK and boto3. ``AsyncPredictor.predict_async`` uploads the body to
``--input-path`` and calls ``InvokeEndpointAsync`` on ``--runtime-url`` (the emulator); S3 is
wherever ``AWS_ENDPOINT_URL_S3`` points. Prints one line ``sdk-client: <JSON>`` with the
output and failure paths at once, then, after ``get_result``, one with ``{"result": ...}`` or
``{"error": <exception class>, "message": ...}`` (the SDK prints lines of its own too), and
exits at once: ``get_result`` polls the path that never comes on in a thread of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import boto3
from sagemaker.async_inference import WaiterConfig
from sagemaker.deserializers import JSONDeserializer, StringDeserializer
from sagemaker.predictor import Predictor
from sagemaker.predictor_async import AsyncPredictor
from sagemaker.serializers import IdentitySerializer
from sagemaker.session import Session


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime-url", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument("--input-path", required=True)
    parser.add_argument("--inference-id", required=True)
    parser.add_argument("--invocation-timeout", type=int)
    parser.add_argument("--text", action="store_true", help="the answer as text, not JSON")
    parser.add_argument("--attempts", type=int, default=30)
    args = parser.parse_args()
    runtime = boto3.client("sagemaker-runtime", endpoint_url=args.runtime_url)
    session = Session(
        boto_session=boto3.session.Session(),
        sagemaker_runtime_client=runtime,
        default_bucket=args.bucket,
    )
    predictor = AsyncPredictor(
        Predictor(
            args.endpoint,
            sagemaker_session=session,
            serializer=IdentitySerializer(args.content_type),
            deserializer=StringDeserializer() if args.text else JSONDeserializer(),
        )
    )
    initial_args = {}
    if args.invocation_timeout is not None:
        initial_args["InvocationTimeoutSeconds"] = args.invocation_timeout
    response = predictor.predict_async(
        data=args.body_file.read_bytes(),
        input_path=args.input_path,
        initial_args=initial_args or None,
        inference_id=args.inference_id,
    )
    _say({"output_path": response.output_path, "failure_path": response.failure_path})
    try:
        result = response.get_result(WaiterConfig(max_attempts=args.attempts, delay=1))
    except Exception as exc:  # what the SDK raises is the answer under test
        _say({"error": type(exc).__name__, "message": str(exc)})
    else:
        _say({"result": result})
    return 0


def _say(line: dict[str, object]) -> None:
    print(f"{PREFIX}{json.dumps(line)}", flush=True)


PREFIX = "sdk-client: "

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: the SDK's other waiter thread would poll on

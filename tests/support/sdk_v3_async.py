"""An async inference client written with the SageMaker Python SDK v3, as a user writes it.

Run by the tests with the SDK's own venv (:mod:`tests.support.sdk`), not with scorer's: it
imports only the SDK and boto3. v3's ``Endpoint.invoke_async`` takes an S3 input location
only, so the program uploads the body there with boto3 first; the SDK finds the emulator
through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` (it has no endpoint URL option) and S3
through ``AWS_ENDPOINT_URL_S3``. Prints one line ``sdk-client: <JSON>`` with what
``invoke_async`` answered, then polls the output and failure locations as a user would and
prints one with ``{"output": <text>}`` or ``{"failure": <text>}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from sagemaker.core.resources import Endpoint

PREFIX = "sdk-client: "


def _say(line: dict[str, object]) -> None:
    print(f"{PREFIX}{json.dumps(line)}", flush=True)


def _read(s3: Any, location: str) -> str | None:
    """The object at ``s3://bucket/key`` as text, or None while it is not there."""
    bucket, _, key = location.removeprefix("s3://").partition("/")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return str(body.decode())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--input-location", required=True)
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument("--inference-id", required=True)
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args()
    s3 = boto3.client("s3")
    bucket, _, key = args.input_location.removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=args.body_file.read_bytes())
    answer = Endpoint(endpoint_name=args.endpoint).invoke_async(
        input_location=args.input_location,
        content_type=args.content_type,
        accept="application/json",
        inference_id=args.inference_id,
    )
    assert answer is not None
    _say(
        {
            "inference_id": answer.inference_id,
            "output_location": answer.output_location,
            "failure_location": answer.failure_location,
        }
    )
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        for kind, location in (
            ("output", answer.output_location),
            ("failure", answer.failure_location),
        ):
            text = _read(s3, str(location))
            if text is not None:
                _say({kind: text})
                return 0
        time.sleep(0.2)
    _say({"timeout": args.wait})
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

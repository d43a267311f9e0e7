"""An S3-compatible world for tests: a moto server on a loopback port, and object reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from scorer.local.asynchronous import split_s3_uri
from scorer.modelserver.ports import free_loopback_port
from tests.support.waiting import wait_for

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Credentials and region for clients of the moto server (it accepts any)."""


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server (S3, SNS, SQS...) on a free loopback port: its URL; stopped on exit."""
    port = free_loopback_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_bucket(bucket: str) -> Iterator[Any]:
    """A moto server reached the standard AWS way (``AWS_ENDPOINT_URL_S3`` and
    :data:`FAKE_AWS` in the environment meanwhile, so the code under test finds it as it
    would find S3) with ``bucket`` created: a boto3 S3 client for it."""
    with moto_server() as url, pytest.MonkeyPatch.context() as patch:
        for key, value in {**FAKE_AWS, "AWS_ENDPOINT_URL_S3": url}.items():
            patch.setenv(key, value)
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket=bucket)
        yield client


def s3_object(s3: Any, uri: str) -> bytes | None:
    """The body of the object at ``s3://bucket/key``, or None if there is none."""
    bucket, key = split_s3_uri(uri)
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return body


def written_object(s3: Any, uri: str, timeout: float = 120) -> bytes:
    """The object at ``uri`` once it exists (the bound only stops a hang)."""
    wait_for(lambda: s3_object(s3, uri) is not None, timeout, f"{uri} to be written")
    body = s3_object(s3, uri)
    assert body is not None
    return body

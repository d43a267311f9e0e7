"""Real AWS SDK clients pointed at a local endpoint (dummy credentials, no retries)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def runtime_client(url: str, read_timeout: float = 120) -> Any:
    """A boto3 ``sagemaker-runtime`` client for the endpoint at ``url`` (one attempt)."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout),
    )

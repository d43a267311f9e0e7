"""Fixtures shared by the integration suites."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.clients import runtime_client


@pytest.fixture(scope="module")
def runtime(url: str) -> Any:
    """A boto3 SageMaker Runtime client for the module's endpoint (its ``url`` fixture)."""
    return runtime_client(url)

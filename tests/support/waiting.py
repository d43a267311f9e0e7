"""Waiting for a condition in an integration test, with a bound that only stops a hang."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (HTTP errors count as not yet) until true; fail after ``timeout`` s.

    The timeout bounds a hang; nothing is measured.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")

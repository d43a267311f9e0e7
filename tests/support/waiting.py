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


def until_answered(
    send: Callable[[float], httpx.Response], timeout: float
) -> tuple[list[int | str], httpx.Response | None]:
    """Call ``send(per_request_timeout)`` until it answers 200 or ``timeout`` s pass, as a
    client that retries would; the statuses seen ("timeout" for a request never answered,
    an exception's name for a connection the server dropped) and the last response.

    Used after a worker restart: MMS 1.1.11 can lose a request sent just as it reconnects
    the restarted worker, or reset its connection (docs/reliability.md), so such a
    request is asked again.
    """
    statuses: list[int | str] = []
    response: httpx.Response | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = send(15.0)
        except httpx.TimeoutException:
            statuses.append("timeout")
            continue
        except httpx.TransportError as exc:
            statuses.append(type(exc).__name__)
            time.sleep(0.5)
            continue
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    return statuses, response

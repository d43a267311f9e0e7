"""scorer.serving.bounded: calls with a deadline, abandoned work, the wedged state."""

from __future__ import annotations

import threading
import time

import pytest

from scorer.serving.bounded import BoundedRunner, DeadlineExceededError, call_with_deadline


def test_call_with_deadline_returns_the_value_and_raises_the_error() -> None:
    assert call_with_deadline(lambda: 41 + 1, 5, "t") == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 5, "t")


def test_call_with_deadline_gives_up_on_a_late_call() -> None:
    release = threading.Event()
    with pytest.raises(DeadlineExceededError) as raised:
        call_with_deadline(release.wait, 0.05, "t")
    assert raised.value.seconds == 0.05
    release.set()


def test_runner_serves_the_next_request_while_one_is_abandoned() -> None:
    runner = BoundedRunner()
    release = threading.Event()
    with pytest.raises(DeadlineExceededError):
        runner.run(release.wait, 0.05)
    assert runner.abandoned == 1 and not runner.wedged
    assert runner.run(lambda: "next", 5) == "next"
    release.set()
    time.sleep(0.1)
    assert runner.abandoned == 0
    assert runner.run(lambda: "again", 5) == "again"


def test_runner_is_wedged_when_two_requests_overrun() -> None:
    runner = BoundedRunner()
    release = threading.Event()
    for _ in range(2):
        with pytest.raises(DeadlineExceededError):
            runner.run(release.wait, 0.05)
    assert runner.wedged and runner.abandoned == 2
    with pytest.raises(DeadlineExceededError):  # queued behind both, cancelled, not run
        runner.run(lambda: "never", 0.05)
    assert runner.abandoned == 2
    release.set()


def test_runner_propagates_errors_and_runs_off_the_callers_thread() -> None:
    runner = BoundedRunner()
    with pytest.raises(KeyError):
        runner.run(lambda: {}["missing"], 5)
    caller = threading.get_ident()
    assert runner.run(threading.get_ident, 5) != caller

"""Start the real Multi Model Server (Java) through scorer, on a free loopback port.

With ``SCORER_TEST_URL`` set (``scripts/container-test`` sets it), :func:`running_server`
starts nothing and hands out that URL instead: the multi-model suite then runs against an
already running server, e.g. the container image.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer

TEST_URL_ENV = "SCORER_TEST_URL"  # an already running server to test instead of starting one


@dataclass(frozen=True)
class ExternalServer:
    """A server started by someone else (only its URL is known)."""

    url: str


def external_url() -> str | None:
    """The URL of an already running server to test, if ``SCORER_TEST_URL`` is set."""
    return os.environ.get(TEST_URL_ENV, "").rstrip("/") or None


def server_environ(run_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for one test server: its own port, config file and temp dirs."""
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(free_loopback_port()),
        "SCORER_RUN_DIR": str(run_dir),
        "SCORER_MMS_CONFIG": str(run_dir / "mms.properties"),
        "SCORER_THREADS_PER_WORKER": "1",
    }
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_server(
    run_dir: Path, extra: Mapping[str, str]
) -> Iterator[ModelServer | ExternalServer]:
    """A started, ready MMS; always stopped (with its workers) on exit.

    With ``SCORER_TEST_URL`` set, the server at that URL instead (started and configured by
    the caller, so ``extra`` is not applied): nothing is started or stopped.
    """
    url = external_url()
    if url is not None:
        yield ExternalServer(url)
        return
    server = ModelServer.from_environ(server_environ(run_dir, extra), bind_address="127.0.0.1")
    server.start()
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop(grace=10)


def load(client: httpx.Client, name: str, url: Path) -> httpx.Response:
    """SageMaker's load call: ``POST /models {"model_name", "url"}``."""
    return client.post("/models", json={"model_name": name, "url": str(url)}, timeout=180)

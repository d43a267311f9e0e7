"""A running ``scorer local --watch`` emulator, as the hot-reload tests drive it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import httpx

from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from tests.support.clients import runtime_client


@contextlib.contextmanager
def running(settings: LocalSettings) -> Iterator[tuple[str, LocalEndpoint]]:
    """The emulator for ``settings`` (one thread per worker), running until the block ends;
    yields its URL and the endpoint."""
    local = LocalEndpoint(settings, {**os.environ, "SCORER_THREADS_PER_WORKER": "1"})
    with local.running(timeout=180) as url:
        yield url, local


class WatchedEndpoint:
    """The emulator at ``url`` and its model server; subclasses say how to invoke the model
    (``invoke`` returns the ``version`` the model's code answers)."""

    def __init__(self, url: str, local: LocalEndpoint) -> None:
        self.url = url
        self.local = local
        self.runtime = runtime_client(url)

    def invoke(self) -> str:
        raise NotImplementedError

    def serves(self, version: str) -> bool:
        """Whether the endpoint answers with ``version`` now (a ModelError: not yet)."""
        try:
            return self.invoke() == version
        except self.runtime.exceptions.ModelError:
            return False

    def model_error(self) -> dict[str, Any] | None:
        """The ModelError the endpoint answers now, or None if it serves."""
        try:
            self.invoke()
        except self.runtime.exceptions.ModelError as error:
            return dict(error.response)
        return None

    def cache_stats(self) -> dict[str, Any]:
        """The emulator's ``/_scorer/cache`` report."""
        return dict(httpx.get(f"{self.url}/_scorer/cache", timeout=10).json())

    def registered(self) -> set[str]:
        """The model names the model server has registered."""
        assert self.local.model_server is not None
        body = httpx.get(f"{self.local.model_server.url}/models", timeout=10).json()
        return {model["modelName"] for model in body["models"]}

"""The model server behind a front end, and (multi-model) the cache that loads into it.

:class:`ModelBackend` owns the client and the cache for the life of the app
(:meth:`ModelBackend.lifespan`) and routes an invocation: single-model to
``/invocations``, multi-model through the cache to ``/models/{name}/invoke``, loading the
model on first use. If the model server answers that it does not hold a model the cache
thinks is resident (the server was restarted), the cache forgets it and the request is
tried once more with a fresh load.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from scorer.cache.cache import ModelCache
from scorer.modelserver.client import Invocation, ModelServerClient, model_missing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelServerEndpoint:
    """Where a front end's model server is, once it runs.

    Attributes:
        url: the base URL of its management and inference APIs.
        log_hint: where its log is, for error messages ("" when unknown).
        unload_on_exit: unload the cache's models when the front end stops (a server that
            outlives the front end, e.g. the compose ``model-server`` service).
        metrics_dir: its workers' metrics files (``ServerConfig.metrics_dir``), which the
            front end's ``/metrics`` sums; None for a server it did not start.
    """

    url: str
    log_hint: str = ""
    unload_on_exit: bool = False
    metrics_dir: Path | None = None


class ModelBackend:
    """The model server (and, multi-model, its cache) as one front end uses it."""

    def __init__(
        self,
        endpoint: ModelServerEndpoint,
        cache: ModelCache | None,
        invoke_timeout_s: float,
    ) -> None:
        self.endpoint = endpoint
        self.cache = cache
        self.invoke_timeout_s = invoke_timeout_s
        self._client: ModelServerClient | None = None

    @property
    def client(self) -> ModelServerClient:
        """The model server's client (only while the app runs)."""
        if self._client is None:
            raise RuntimeError("the model backend is used outside the app's lifespan")
        return self._client

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open the client and start the cache; on exit close both."""
        self._client = ModelServerClient(
            self.endpoint.url, invoke_timeout_s=self.invoke_timeout_s
        )
        if self.cache is not None:
            await self.cache.start()
        try:
            yield
        finally:
            if self.cache is not None:
                await self.cache.aclose(unload=self.endpoint.unload_on_exit)
            await self._client.aclose()
            self._client = None

    async def invoke(self, invocation: Invocation, key: str | None) -> httpx.Response:
        """Invoke the model for ``key`` (multi-model) or the single model (``key`` None).

        Raises:
            ScorerError: the model cannot be loaded, or the server failed to answer.
        """
        if self.cache is None or key is None:
            return await self.client.invoke("/invocations", invocation)
        for attempt in (1, 2):
            async with self.cache.use(key) as model:
                response = await self.client.invoke_model(model.name, invocation)
                if attempt == 1 and model_missing(response):
                    logger.warning("model server lost %s; loading it again", key)
                    await self.cache.discard(model)
                    continue
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def healthy(self) -> bool:
        """Whether the model server answers its ``/ping`` with 200."""
        return await self.client.healthy()

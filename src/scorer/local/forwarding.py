"""Forwarding invocations to the model server's inference API (an async httpx client)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx

from scorer.cache.errors import ModelServerUnavailableError
from scorer.local.protocol import Invocation

if TYPE_CHECKING:
    from scorer.cache.cache import ModelCache


logger = logging.getLogger(__name__)


def model_missing(response: httpx.Response) -> bool:
    """MMS's own 404 for a model it does not hold (not a model's 404 answer)."""
    if response.status_code != 404:
        return False
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and body.get("type") == "ModelNotFoundException"


class ModelServerTimeoutError(Exception):
    """The model server did not answer an invocation in time."""


class ModelServerClient:
    """POSTs invocations to MMS (``/models/{name}/invoke`` or ``/invocations``)."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            transport=transport,
            trust_env=False,
        )

    async def invoke(self, path: str, invocation: Invocation) -> httpx.Response:
        """Send the body and the forwarded headers; return the model server's response.

        Raises:
            ModelServerUnavailableError: the model server cannot be reached.
            ModelServerTimeoutError: it did not answer in time.
        """
        try:
            return await self._client.post(
                path, content=invocation.body, headers=invocation.forward_headers()
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ModelServerUnavailableError(
                    f"the model server at {self.base_url} does not accept connections"
                ) from None
            raise ModelServerTimeoutError(str(exc)) from None
        except httpx.TransportError as exc:
            raise ModelServerUnavailableError(
                f"the model server at {self.base_url} cannot be reached ({exc})"
            ) from None

    async def invoke_cached(
        self, cache: ModelCache, key: str, invocation: Invocation
    ) -> httpx.Response:
        """Invoke the model ``cache`` holds for ``key`` (loading it on first use).

        If the model server answers that it does not hold the model (it was restarted),
        the cache forgets it and the request is tried once more with a fresh load.
        """
        for attempt in (1, 2):
            async with cache.use(key) as model:
                response = await self.invoke(f"/models/{model.name}/invoke", invocation)
                if attempt == 1 and model_missing(response):
                    logger.warning("model server lost %s; loading it again", key)
                    await cache.discard(model)
                    continue
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def healthy(self) -> bool:
        """Whether the model server answers its ``/ping`` with 200."""
        try:
            response = await self._client.get("/ping", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

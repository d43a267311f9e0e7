"""Forwarding invocations to the model server's inference API (an async httpx client)."""

from __future__ import annotations

import httpx

from scorer.cache.errors import ModelServerUnavailableError
from scorer.local.protocol import Invocation


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

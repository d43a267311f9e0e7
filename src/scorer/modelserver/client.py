"""The one client for Multi Model Server's HTTP APIs (management and inference; async httpx).

Every caller that talks to MMS goes through :class:`ModelServerClient`: the model registry
(``POST/DELETE/GET /models``), both front ends (``/models/{name}/invoke``, ``/invocations``,
``/ping``), the process supervisor (``GET /models`` to restore after a restart) and the
load-failure janitor. Transport failures map to scorer's errors once, here:

* no connection, or a connect timeout -> :class:`ModelServerUnavailableError` (503);
* no answer in time -> :class:`ModelServerTimeoutError` (504).

Status codes are returned, not raised: what a 404 or 507 means depends on the call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from scorer.errors import ModelServerTimeoutError, ModelServerUnavailableError

CONTENT_TYPE = "Content-Type"
ACCEPT = "Accept"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"

MANAGEMENT_TIMEOUT_SECONDS = 10.0
"""How long a management call other than a load or an unload may take."""
LOAD_TIMEOUT_SECONDS = 360.0
"""SageMaker lets a multi-model load (and unload) run this long."""


@dataclass(frozen=True)
class Invocation:
    """One request for a model: the body and the headers the model server gets."""

    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    target_model: str | None = None
    inference_id: str | None = None

    def forward_headers(self) -> dict[str, str]:
        """The headers the model server gets (SageMaker's multi-model contract)."""
        headers = {
            CONTENT_TYPE: self.content_type,
            ACCEPT: self.accept,
            CUSTOM_ATTRIBUTES: self.custom_attributes,
            TARGET_MODEL: self.target_model,
            INFERENCE_ID: self.inference_id,
        }
        return {name: value for name, value in headers.items() if value}


def error_message(response: httpx.Response) -> str:
    """MMS's ``{"message": ...}`` or the body text, on one short line."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    text = body.get("message") if isinstance(body, dict) else None
    text = str(text) if text else response.text or response.reason_phrase
    return " ".join(text.split())[:300]


def model_missing(response: httpx.Response) -> bool:
    """MMS's own 404 for a model it does not hold (not a model's 404 answer)."""
    if response.status_code != 404:
        return False
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(body, dict) and body.get("type") == "ModelNotFoundException"


def described_workers(description: Any) -> list[dict[str, Any]] | None:
    """The workers a ``GET /models/{name}`` answer lists (None: no model described)."""
    entries = description if isinstance(description, list) else [description]
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("workers"), list):
            return [w for w in entry["workers"] if isinstance(w, dict)]
    return None


def worker_count(description: Any) -> int | None:
    """How many workers ``GET /models/{name}`` lists for the model (None: not described)."""
    workers = described_workers(description)
    return None if workers is None else len(workers)


def reported_memory(description: Any) -> int:
    """The sum of the workers' ``memoryUsage`` in a ``GET /models/{name}`` answer."""
    usages = (w.get("memoryUsage") for w in described_workers(description) or [])
    return sum(u for u in usages if isinstance(u, int) and u > 0)


class ModelServerClient:
    """Management and inference calls to one MMS (both APIs on one base URL)."""

    def __init__(
        self,
        base_url: str,
        *,
        invoke_timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Args:
        base_url: the server's base URL (``http://127.0.0.1:9081``).
        invoke_timeout_s: how long one invocation may take.
        transport: an httpx transport (tests).
        """
        self.base_url = base_url.rstrip("/")
        self.invoke_timeout_s = invoke_timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(MANAGEMENT_TIMEOUT_SECONDS, connect=5.0),
            transport=transport,
            trust_env=False,
        )

    async def _send(self, method: str, path: str, timeout: float, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(
                method, path, timeout=httpx.Timeout(timeout, connect=5.0), **kwargs
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ModelServerUnavailableError(
                    f"the model server at {self.base_url} does not accept connections"
                ) from None
            raise ModelServerTimeoutError(
                f"the model server at {self.base_url} did not answer {method} {path} in "
                f"{timeout:g} s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ModelServerUnavailableError(
                f"the model server at {self.base_url} cannot be reached ({exc})"
            ) from None

    # ------------------------------------------------------------------ inference API

    async def invoke(self, path: str, invocation: Invocation) -> httpx.Response:
        """Send the body and the forwarded headers to ``path``; return the answer.

        Raises:
            ModelServerUnavailableError: the model server cannot be reached.
            ModelServerTimeoutError: it did not answer in ``invoke_timeout_s``.
        """
        return await self._send(
            "POST",
            path,
            self.invoke_timeout_s,
            content=invocation.body,
            headers=invocation.forward_headers(),
        )

    async def invoke_model(self, name: str, invocation: Invocation) -> httpx.Response:
        """``POST /models/{name}/invoke`` (multi-model mode)."""
        return await self.invoke(f"/models/{quote(name, safe='')}/invoke", invocation)

    async def ping(self) -> int | None:
        """The status of ``GET /ping``, or None when the server does not answer."""
        return (await self.ping_state())[0]

    async def ping_state(self) -> tuple[int | None, str]:
        """``GET /ping``: its status (None: no answer) and what happened, in words."""
        try:
            response = await self._send("GET", "/ping", 2.0)
        except (ModelServerUnavailableError, ModelServerTimeoutError) as exc:
            return None, exc.message
        if response.status_code == 200:
            return 200, "healthy"
        return (
            response.status_code,
            f"/ping answered {response.status_code}: {error_message(response)}",
        )

    async def metrics_text(self) -> str | None:
        """The model server's ``GET /metrics`` in Prometheus text format (0.0.4), or None
        when it does not answer 200."""
        try:
            response = await self._send(
                "GET", "/metrics", MANAGEMENT_TIMEOUT_SECONDS, headers={"Accept": "text/plain"}
            )
        except (ModelServerUnavailableError, ModelServerTimeoutError):
            return None
        return response.text if response.status_code == 200 else None

    async def healthy(self) -> bool:
        """Whether the model server answers its ``/ping`` with 200."""
        return await self.ping() == 200

    # ------------------------------------------------------------------ management API

    async def register(
        self, name: str, url: str, timeout: float = LOAD_TIMEOUT_SECONDS
    ) -> httpx.Response:
        """``POST /models {"model_name", "url"}``: load a model (SageMaker's load call)."""
        return await self._send(
            "POST", "/models", timeout, json={"model_name": name, "url": url}
        )

    async def unregister(
        self, name: str, timeout: float = LOAD_TIMEOUT_SECONDS
    ) -> httpx.Response:
        """``DELETE /models/{name}``: unload a model."""
        return await self._send("DELETE", f"/models/{quote(name, safe='')}", timeout)

    async def describe(self, name: str) -> Any | None:
        """``GET /models/{name}`` as JSON, or None when the server does not hold it."""
        response = await self._send(
            "GET", f"/models/{quote(name, safe='')}", MANAGEMENT_TIMEOUT_SECONDS
        )
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    async def list_models(self) -> dict[str, str]:
        """``{model name: model url}`` as the server lists them now (all pages)."""
        models: dict[str, str] = {}
        token: str | None = None
        while True:
            params = {"limit": "100", **({"next_page_token": token} if token else {})}
            response = await self._send(
                "GET", "/models", MANAGEMENT_TIMEOUT_SECONDS, params=params
            )
            body = response.json()
            for entry in body.get("models", []):
                models[entry["modelName"]] = entry["modelUrl"]
            token = body.get("nextPageToken")
            if not token:
                return models

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def __aenter__(self) -> ModelServerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

"""The self-managed multi-model mode's front: many models behind a single-model endpoint.

SageMaker runs bring-your-own multi-model endpoints on CPU instances only; on GPU instances
the container itself must load models. In this mode (``SCORER_MODEL_PREFIX`` set) the
container answers the single-model contract (``GET /ping``, ``POST /invocations``) with this
app, and routes each invocation to the model named by ``X-Amzn-SageMaker-Custom-Attributes``
(``target_model=<archive key>``; SageMaker passes the header through and ``InvokeEndpoint``'s
``CustomAttributes`` sets it) or to ``SCORER_DEFAULT_MODEL``. The shared
:class:`~scorer.cache.ModelCache` fetches, checks, extracts and registers the archive with
the Multi Model Server behind it, once, and evicts least recently used models at its limits.

Errors keep the container's JSON shape ``{"code", "type", "message"}``; a model's own error
answers pass through with their status.

``GET /metrics`` answers in Prometheus format (the workers' per-model metrics and the
cache's; :mod:`scorer.frontend.metrics`); ``GET /metrics.json`` the cache's statistics.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scorer.cache.cache import ModelCache
from scorer.config import DEFAULT_MODEL
from scorer.errors import (
    BadRequestError,
    ModelServerTimeoutError,
    PayloadTooLargeError,
    ScorerError,
)
from scorer.frontend.backend import ModelBackend, ModelServerEndpoint
from scorer.frontend.body import read_body
from scorer.frontend.emf import emf_reporting
from scorer.frontend.metrics import metrics_route
from scorer.inference.context import CUSTOM_ATTRIBUTES, INFERENCE_ID, parse_custom_attributes
from scorer.metrics.emf import EmfSettings
from scorer.modelserver.client import Invocation

logger = logging.getLogger("scorer.gateway")

TARGET_ATTRIBUTE = "target_model"
STATS_PATH = "/metrics.json"
"""The cache's statistics as JSON (``/metrics`` is Prometheus text)."""


@dataclass(frozen=True)
class GatewaySettings:
    """What the front needs besides the model server and the cache."""

    default_model: str | None = None
    max_payload_bytes: int = 6 * 1024 * 1024
    invoke_timeout_seconds: float = 60.0


def load_gateway_settings(
    environ: Mapping[str, str], max_payload: int, timeout: float
) -> GatewaySettings:
    """Settings from the environment (``SCORER_DEFAULT_MODEL``) and the server's config."""
    return GatewaySettings(
        default_model=(environ.get(DEFAULT_MODEL) or "").strip() or None,
        max_payload_bytes=max_payload,
        invoke_timeout_seconds=timeout,
    )


def _error(error: ScorerError, request_id: str) -> Response:
    body = {**error.to_dict(), "request_id": request_id}
    return JSONResponse(body, status_code=int(error.status_code))


def target_model(headers: Mapping[str, str], default: str | None) -> str:
    """The archive key a request asks for: ``target_model=`` in the custom attributes.

    Raises:
        BadRequestError: neither the attribute nor a default model is set.
    """
    key = parse_custom_attributes(headers.get(CUSTOM_ATTRIBUTES)).get(TARGET_ATTRIBUTE)
    if key:
        return key
    if default:
        return default
    raise BadRequestError(
        "no target model: set CustomAttributes to 'target_model=<archive key under the "
        f"model prefix>' (X-Amzn-SageMaker-Custom-Attributes), or {DEFAULT_MODEL}"
    )


def _too_large(limit: int) -> ScorerError:
    return PayloadTooLargeError(f"request body is larger than {limit} bytes")


def _disconnected() -> ScorerError:
    return BadRequestError("the client closed the connection before the body was read")


class Gateway:
    """``POST /invocations`` through the model cache to the model server."""

    def __init__(self, settings: GatewaySettings, backend: ModelBackend, cache: ModelCache):
        self.settings = settings
        self.backend = backend
        self.cache = cache

    async def invocations(self, request: Request) -> Response:
        """Route one invocation to its model (loading it on first use)."""
        request_id = str(uuid.uuid4())
        try:
            key = target_model(request.headers, self.settings.default_model)
            body = await read_body(
                request, self.settings.max_payload_bytes, _too_large, _disconnected
            )
            invocation = Invocation(
                body=body,
                content_type=request.headers.get("content-type"),
                accept=request.headers.get("accept"),
                custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
                target_model=key,
                inference_id=request.headers.get(INFERENCE_ID),
            )
            response = await self.backend.invoke(invocation, key)
        except ModelServerTimeoutError:  # the message names an internal address
            return _error(ModelServerTimeoutError("the model did not answer in time"), request_id)
        except ScorerError as error:
            return _error(error, request_id)
        except Exception:
            logger.exception("invocation %s failed", request_id)
            return _error(
                ScorerError("internal error in the model gateway; see its log"), request_id
            )
        headers = {"x-request-id": request_id}
        custom = response.headers.get(CUSTOM_ATTRIBUTES)
        if custom:
            headers[CUSTOM_ATTRIBUTES] = custom
        return Response(
            response.content,
            response.status_code,
            headers=headers,
            media_type=response.headers.get("content-type", "application/octet-stream"),
        )

    async def ping(self, _request: Request) -> Response:
        """Healthy when the model server behind answers its own ping."""
        if not await self.backend.healthy():
            return JSONResponse({"status": "Unhealthy"}, status_code=503)
        return JSONResponse({"status": "Healthy"})

    async def cache_stats(self, _request: Request) -> Response:
        """Cache statistics: hits, misses, loads, evictions, hit rate, resident models."""
        return JSONResponse(self.cache.stats().to_dict())


def create_gateway_app(
    settings: GatewaySettings,
    endpoint: ModelServerEndpoint,
    cache: ModelCache,
    emf: EmfSettings | None = None,
) -> Starlette:
    """The self-managed mode's app; starts and closes the cache with the app, and writes
    EMF lines (``emf``; :mod:`scorer.frontend.emf`) while it runs."""
    backend = ModelBackend(endpoint, cache, settings.invoke_timeout_seconds)
    gateway = Gateway(settings, backend, cache)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with backend.lifespan(), emf_reporting(endpoint, cache, emf):
            yield

    app = Starlette(
        routes=[
            Route("/ping", gateway.ping, methods=["GET"]),
            Route("/invocations", gateway.invocations, methods=["POST"]),
            Route(STATS_PATH, gateway.cache_stats, methods=["GET"]),
            metrics_route(endpoint, cache),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app

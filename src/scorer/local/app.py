"""The local SageMaker Runtime: a Starlette app that speaks InvokeEndpoint to the SDKs.

``POST /endpoints/{EndpointName}/invocations``: on a multi-model endpoint the request's
TargetModel goes through the model cache (fetch, check, extract, register once) and the
body to the model server's ``POST /models/{hash}/invoke``; on a single-model endpoint to
``POST /invocations``. Answers carry SageMaker's response headers; errors carry SageMaker
Runtime's error shapes (:mod:`scorer.local.errors`), never a traceback.

``GET /ping`` answers 200 (for container health checks), ``GET /_scorer/cache`` the
cache's statistics and ``GET /metrics`` the model workers' and the cache's metrics in
Prometheus format (:mod:`scorer.frontend.metrics`); none is a SageMaker Runtime operation.

With data capture (``--data-capture``) successful invocations are recorded in SageMaker's
capture format (:mod:`scorer.local.capture`); with inference components
(``--inference-component``) ``InferenceComponentName`` picks the archive
(:mod:`scorer.local.protocol`); with serverless limits (``--serverless-*``) bodies over
4 MB and invocations beyond ``MaxConcurrency`` are refused (:mod:`scorer.local.serverless`).

With hot reload (``--watch``, :mod:`scorer.local.reload`) the app's lifespan runs the file
watcher, and a single model is invoked by its current version's name
(``/models/model-r<N>/invoke``) instead of ``/invocations``.

Build it with :func:`create_app`; nothing is read or started at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scorer.cache.cache import ModelCache
from scorer.errors import ModelServerTimeoutError, ScorerError
from scorer.frontend.backend import ModelBackend, ModelServerEndpoint
from scorer.frontend.emf import emf_reporting
from scorer.frontend.metrics import metrics_route
from scorer.local.asynchronous import ASYNC_INVOKE_TIMEOUT_SECONDS, AsyncInference
from scorer.local.capture import DataCapture, open_capture
from scorer.local.errors import (
    ERROR_TYPE_HEADER,
    ServiceError,
    internal_failure,
    model_error,
    service_error_for,
)
from scorer.local.protocol import (
    INVOKED_VARIANT,
    REQUEST_ID,
    read_invocation,
)
from scorer.local.reload import ModelVersions
from scorer.local.serverless import ConcurrencyLimit, max_concurrency, response_too_large
from scorer.local.settings import LocalSettings
from scorer.local.watch import FileWatcher
from scorer.metrics.emf import EmfSettings
from scorer.modelserver.client import (
    CONTENT_TYPE,
    CUSTOM_ATTRIBUTES,
    Invocation,
    ModelServerClient,
)

logger = logging.getLogger("scorer.local")

STATS_PATH = "/_scorer/cache"
"""The cache's statistics and resident models (scorer's own; not a SageMaker operation)."""
_TIMEOUT_MESSAGE = (
    "Your invocation timed out while waiting for a response from the model. "
    "Review the model server's log, resolve the issue, and try again."
)


class _Invoker:
    """The invocation path: validate, resolve through the cache, forward, shape the answer."""

    def __init__(
        self, settings: LocalSettings, backend: ModelBackend, versions: ModelVersions | None
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.versions = versions
        self.log_hint = backend.endpoint.log_hint
        self.capture: DataCapture | None = None  # set while the app runs (--data-capture)
        self.concurrency = (
            ConcurrencyLimit(max_concurrency(settings)) if settings.serverless else None
        )

    async def _forward(
        self, invocation: Invocation, client: ModelServerClient | None = None
    ) -> httpx.Response:
        if self.versions is None:
            if client is not None and invocation.target_model is None:
                return await client.invoke("/invocations", invocation)
            return await self.backend.invoke(invocation, invocation.target_model)
        async with self.versions.use() as name:  # hot reload: the version serving now
            return await (client or self.backend.client).invoke_model(name, invocation)

    def _error(self, error: ServiceError, request_id: str) -> Response:
        headers = {ERROR_TYPE_HEADER: error.code, REQUEST_ID: request_id}
        return Response(
            error.body(), error.status_code, headers=headers, media_type="application/json"
        )

    def _model_error(self, response: httpx.Response) -> ServiceError:
        return model_error(
            response.status_code,
            response.content.decode("utf-8", errors="replace"),
            log_stream_arn=self.settings.log_stream_arn,
            log_hint=self.log_hint,
        )

    async def _invoke(self, request: Request) -> tuple[Invocation, httpx.Response]:
        """Read, forward and check one invocation; its answer, or a ServiceError/ScorerError."""
        invocation = await read_invocation(
            request, request.path_params["endpoint_name"], self.settings
        )
        try:
            response = await self._forward(invocation)
        except ModelServerTimeoutError:
            raise model_error(
                0,
                _TIMEOUT_MESSAGE,
                log_stream_arn=self.settings.log_stream_arn,
                log_hint=self.log_hint,
            ) from None
        if response.status_code >= 400:
            raise self._model_error(response)
        if self.settings.serverless and len(response.content) > self.settings.payload_limit:
            raise response_too_large(len(response.content))
        return invocation, response

    async def invoke(self, request: Request) -> Response:
        """``POST /endpoints/{EndpointName}/invocations``."""
        request_id = str(uuid.uuid4())
        try:
            with self.concurrency.slot() if self.concurrency else contextlib.nullcontext():
                invocation, response = await self._invoke(request)
        except ServiceError as error:
            return self._error(error, request_id)
        except ScorerError as error:
            return self._error(
                service_error_for(
                    error,
                    log_stream_arn=self.settings.log_stream_arn,
                    log_hint=self.log_hint,
                ),
                request_id,
            )
        except Exception:
            logger.exception("invocation %s failed", request_id)
            return self._error(internal_failure(request_id), request_id)
        content_type = response.headers.get(CONTENT_TYPE, "application/octet-stream")
        if self.capture is not None:
            self.capture.offer(
                invocation.body,
                invocation.content_type,
                response.content,
                content_type,
                invocation.inference_id,
            )
        headers = {
            CONTENT_TYPE: content_type,
            INVOKED_VARIANT: self.settings.variant_name,
            REQUEST_ID: request_id,
        }
        custom = response.headers.get(CUSTOM_ATTRIBUTES)
        if custom:
            headers[CUSTOM_ATTRIBUTES] = custom
        return Response(response.content, 200, headers=headers)


async def _ping(_request: Request) -> Response:
    return Response(b"", 200)


def _stats_route(cache: ModelCache | None, versions: ModelVersions | None) -> Route:
    async def stats(_request: Request) -> Response:
        body: dict[str, Any] = {"multi_model": cache is not None}
        if cache is not None:
            body["cache"] = cache.stats().to_dict()
            body["resident"] = [
                {
                    "model": model.key,
                    "name": model.name,
                    "extracted_bytes": model.extracted_bytes,
                    "footprint": dict(model.footprint),
                    "load_ms": model.load_ms,
                    "in_flight": model.in_flight,
                }
                for model in cache.resident()
            ]
            body["retiring"] = [  # replaced versions (--watch) finishing their requests
                {"model": model.key, "name": model.name, "in_flight": model.in_flight}
                for model in cache.retiring()
            ]
        if versions is not None:
            body["versions"] = versions.describe()
        return Response(json.dumps(body), 200, media_type="application/json")

    return Route(STATS_PATH, stats, methods=["GET"])


def _unknown_operation(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    body = json.dumps({"message": f"{request.method} {request.url.path} is not supported"})
    return Response(
        body,
        status,
        headers={ERROR_TYPE_HEADER: "UnknownOperationException", REQUEST_ID: str(uuid.uuid4())},
        media_type="application/json",
    )


def _unexpected(_request: Request, _exc: Exception) -> Response:
    request_id = str(uuid.uuid4())
    logger.exception("unexpected error (request id %s)", request_id)
    error = internal_failure(request_id)
    return Response(
        error.body(),
        error.status_code,
        headers={ERROR_TYPE_HEADER: error.code, REQUEST_ID: request_id},
        media_type="application/json",
    )


def create_app(
    settings: LocalSettings,
    endpoint: ModelServerEndpoint,
    cache: ModelCache | None = None,
    emf: EmfSettings | None = None,
    *,
    versions: ModelVersions | None = None,
    watcher: FileWatcher | None = None,
) -> Starlette:
    """The emulator app for ``settings``.

    Args:
        settings: the emulator settings.
        endpoint: the model server it forwards to (the runner starts it or waits for it).
        cache: the model cache (required for a multi-model endpoint). The app starts it
            on start-up and closes it (and its registry) on shutdown.
        emf: EMF lines of the workers' and the cache's metrics while it runs (None: none;
            :mod:`scorer.frontend.emf`).
        versions: hot reload of a single model: the app loads its first version on
            start-up, invokes the version serving now, and closes it on shutdown.
        watcher: hot reload: the file watcher the app runs while it serves.

    Raises:
        ValueError: a multi-model endpoint without a cache.
    """
    if settings.multi_model and cache is None:
        raise ValueError("a multi-model endpoint needs a model cache")
    backend = ModelBackend(
        endpoint, cache if settings.multi_model else None, settings.invoke_timeout_seconds
    )
    invoker = _Invoker(settings, backend, versions)
    async_client: list[ModelServerClient] = []  # async calls may take up to an hour

    async def invoke_async(invocation: Invocation) -> httpx.Response:
        return await invoker._forward(invocation, async_client[0])

    asynchronous = AsyncInference(settings, invoke_async)

    @contextlib.asynccontextmanager
    async def async_inference() -> AsyncIterator[None]:
        if settings.async_output_path is None:
            yield
            return
        client = ModelServerClient(endpoint.url, invoke_timeout_s=ASYNC_INVOKE_TIMEOUT_SECONDS)
        async_client.append(client)
        try:
            yield
        finally:
            await asynchronous.aclose()
            await client.aclose()

    @contextlib.asynccontextmanager
    async def hot_reload() -> AsyncIterator[None]:
        try:
            if versions is not None:
                await versions.load()  # the first version (a failure is served as ModelError)
            if watcher is not None:
                await watcher.start()
            yield
        finally:
            if watcher is not None:
                await watcher.aclose()
            if versions is not None:
                await versions.aclose()

    @contextlib.asynccontextmanager
    async def data_capture() -> AsyncIterator[None]:
        if settings.data_capture is None:
            yield
            return
        invoker.capture = open_capture(
            settings.data_capture,
            settings.endpoint_name,
            settings.variant_name,
            percent=settings.data_capture_percent,
            csv_types=settings.capture_csv_content_types,
            json_types=settings.capture_json_content_types,
        )
        try:
            yield
        finally:
            capture, invoker.capture = invoker.capture, None
            await asyncio.to_thread(capture.close)  # what is still queued is written

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with (
            backend.lifespan(),
            emf_reporting(endpoint, backend.cache, emf),
            hot_reload(),
            async_inference(),
            data_capture(),
        ):
            yield {}

    app = Starlette(
        routes=[
            Route("/endpoints/{endpoint_name}/invocations", invoker.invoke, methods=["POST"]),
            Route(
                "/endpoints/{endpoint_name}/async-invocations",
                asynchronous.accept,
                methods=["POST"],
            ),
            Route("/ping", _ping, methods=["GET"]),
            _stats_route(backend.cache, versions),
            metrics_route(endpoint, backend.cache),
        ],
        exception_handlers={HTTPException: _unknown_operation, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.cache = backend.cache
    app.state.asynchronous = asynchronous
    return app

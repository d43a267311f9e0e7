"""``GET /metrics`` of both front ends: the model workers' metrics and the cache's.

The internal model server's workers write their metrics to its ``metrics_dir``
(:mod:`scorer.metrics.worker`); each scrape sums those files and adds the cache's counters,
read from :meth:`~scorer.cache.cache.ModelCache.stats` on the event loop (the cache is not
thread-safe); the text is built on a worker thread. An external model server (``scorer
local --model-server-url``, the compose stack) keeps its workers' files to itself: its own
``GET /metrics`` (scorer's MMS plugin) is fetched and appended, in the text format.
"""

from __future__ import annotations

from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scorer.cache.cache import ModelCache
from scorer.frontend.backend import ModelServerEndpoint
from scorer.metrics.cache import CacheCollector
from scorer.metrics.exposition import registry_of, render
from scorer.metrics.multiprocess import WorkerFilesCollector
from scorer.modelserver.client import ModelServerClient

METRICS_PATH = "/metrics"


def metrics_route(endpoint: ModelServerEndpoint, cache: ModelCache | None) -> Route:
    """The ``GET /metrics`` route for a front end over ``endpoint`` (and ``cache``)."""
    workers = None if endpoint.metrics_dir is None else WorkerFilesCollector(endpoint.metrics_dir)

    async def metrics(request: Request) -> Response:
        collectors: list[Collector] = [] if workers is None else [workers]
        if cache is not None:
            models = {model.name: model.key for model in cache.resident()}
            collectors.append(CacheCollector(cache.stats(), models))
        registry = registry_of(*collectors)
        # an external model server's own text is appended: both must be the text format
        accept = request.headers.get("accept", "") if workers is not None else "text/plain"
        body, content_type = await run_in_threadpool(render, registry, accept)
        if workers is None:
            async with ModelServerClient(endpoint.url) as client:
                upstream = await client.metrics_text()
            if upstream:
                body += upstream.encode()
        return Response(body, 200, headers={"content-type": content_type})

    return Route(METRICS_PATH, metrics, methods=["GET"])

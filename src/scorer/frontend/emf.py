"""Both front ends' EMF lines: what their ``/metrics`` serves, every interval, on stdout.

The workers' summed files are read on the reporter's thread; the cache's stats are taken on
the event loop (the cache is not thread-safe), so the reporter's last flush, on shutdown,
runs on a worker thread while the loop waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client.metrics_core import Metric

from scorer.cache.cache import ModelCache
from scorer.frontend.backend import ModelServerEndpoint
from scorer.metrics.cache import CacheCollector
from scorer.metrics.emf import EmfSettings, start_reporter
from scorer.metrics.multiprocess import WorkerFilesCollector

SNAPSHOT_TIMEOUT_SECONDS = 10.0


@contextlib.asynccontextmanager
async def emf_reporting(
    endpoint: ModelServerEndpoint, cache: ModelCache | None, settings: EmfSettings | None
) -> AsyncIterator[None]:
    """Report the workers' and the cache's metrics while the app runs (nothing when
    ``settings`` is None); the remainder is written on exit."""
    loop = asyncio.get_running_loop()
    workers = None if endpoint.metrics_dir is None else WorkerFilesCollector(endpoint.metrics_dir)

    async def cache_snapshot(cache: ModelCache) -> CacheCollector:
        return CacheCollector(cache.stats(), {model.name: model.key for model in cache.resident()})

    def collect() -> list[Metric]:
        metrics = [] if workers is None else list(workers.collect())
        if cache is not None:
            snapshot = asyncio.run_coroutine_threadsafe(cache_snapshot(cache), loop)
            metrics.extend(snapshot.result(SNAPSHOT_TIMEOUT_SECONDS).collect())
        return metrics

    reporter = start_reporter(settings, collect)
    try:
        yield
    finally:
        if reporter is not None:
            await asyncio.to_thread(reporter.stop)

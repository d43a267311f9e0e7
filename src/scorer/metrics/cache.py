"""The model cache's counters as Prometheus metrics, read from its stats at each scrape.

The front end takes the snapshot (:meth:`scorer.cache.ModelCache.stats` and the resident
models) on its event loop and hands it to :class:`CacheCollector`; this module knows the
stats only by their shape, so it does not import the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class CacheStatsLike(Protocol):
    """What the collector reads of :class:`scorer.cache.stats.CacheStats`."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def loads(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def resident_models(self) -> tuple[str, ...]: ...
    @property
    def loading(self) -> tuple[str, ...]: ...
    @property
    def footprint(self) -> Mapping[str, int]: ...


class CacheCollector(Collector):
    """One scrape's cache metrics.

    Args:
        stats: the cache's stats snapshot.
        models: resident models, model server name -> key (``TargetModel``): exported as
            ``scorer_cache_model_info{model, key}`` so the workers' ``model`` label (a
            hash of the key) can be joined to the key.
    """

    def __init__(self, stats: CacheStatsLike, models: Mapping[str, str]) -> None:
        self.stats = stats
        self.models = dict(models)

    def collect(self) -> Iterable[Metric]:
        """The counters, the resident and loading counts, footprints and the name map."""
        stats = self.stats
        counters = (
            ("scorer_cache_hits", "Requests that found their model resident.", stats.hits),
            ("scorer_cache_misses", "Requests that waited for a load.", stats.misses),
            ("scorer_cache_loads", "Successful loads into the model server.", stats.loads),
            ("scorer_cache_load_failures", "Loads that failed.", stats.failures),
            (
                "scorer_cache_evictions",
                "Models unloaded for a limit, after a 507, or on request.",
                stats.evictions,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        yield GaugeMetricFamily(
            "scorer_cache_resident_models", "Models resident now.", len(stats.resident_models)
        )
        yield GaugeMetricFamily(
            "scorer_cache_loading_models", "Models being loaded now.", len(stats.loading)
        )
        footprint = GaugeMetricFamily(
            "scorer_cache_footprint_bytes",
            "Bytes the resident models use, per budget (host_memory, gpu_memory, extracted).",
            labels=["budget"],
        )
        for budget, value in sorted(stats.footprint.items()):
            footprint.add_metric([budget], value)
        yield footprint
        info = InfoMetricFamily(
            "scorer_cache_model",
            "A resident model: its model server name (the model label) and its key.",
            labels=["model", "key"],
        )
        for name, key in sorted(self.models.items()):
            info.add_metric([name, key], {})
        yield info

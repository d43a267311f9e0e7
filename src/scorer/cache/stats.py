"""Counters of the model cache, and the snapshot :meth:`ModelCache.stats` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass
class CacheCounters:
    """Running totals kept by the cache."""

    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    failures: int = 0
    last_load_ms: float | None = None


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache.

    Attributes:
        hits: requests that found their model resident.
        misses: requests that had to wait for a load (their own or a concurrent one).
        loads: successful loads (fetch, check, extract, register).
        evictions: models unloaded to respect a limit, after a 507, or on request.
        failures: loads that failed.
        resident_models: keys of the resident models, least recently used first.
        loading: keys being loaded now.
        footprint: bytes in use per budget name (``host_memory``...).
        last_load_ms: duration of the latest successful load.
    """

    hits: int
    misses: int
    loads: int
    evictions: int
    failures: int
    resident_models: tuple[str, ...]
    loading: tuple[str, ...]
    footprint: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    last_load_ms: float | None = None

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); 0.0 before any request."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``hit_rate`` included)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "loads": self.loads,
            "evictions": self.evictions,
            "failures": self.failures,
            "hit_rate": round(self.hit_rate, 4),
            "resident_models": list(self.resident_models),
            "loading": list(self.loading),
            "footprint": dict(self.footprint),
            "last_load_ms": self.last_load_ms,
        }

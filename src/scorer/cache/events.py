"""The model cache's event names: one line per load, hit, miss, eviction and failure,
written by :func:`scorer.events.log_event` (failures at WARNING)."""

from __future__ import annotations

LOGGER_NAME = "scorer.cache"

HIT = "cache.hit"
MISS = "cache.miss"
LOAD = "cache.load"
MEASURE = "cache.measure"
EVICT = "cache.evict"
FAILURE = "cache.failure"


"""Structured cache events: one JSON line per load, hit, miss, eviction and failure."""

from __future__ import annotations

import json
import logging
from typing import Any

LOGGER_NAME = "scorer.cache"

HIT = "cache.hit"
MISS = "cache.miss"
LOAD = "cache.load"
MEASURE = "cache.measure"
EVICT = "cache.evict"
FAILURE = "cache.failure"


def log_event(logger: logging.Logger, event: str, *, model: str, **fields: Any) -> None:
    """Log ``{"event", "model", ...fields}`` as one JSON line (failures at WARNING)."""
    record = {"event": event, "model": model, **fields}
    level = logging.WARNING if event == FAILURE else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps(record, default=str, sort_keys=True))

"""scorer's event lines: one line per request, load, failed load, forward pass and cache event.

Each line is one event with flat fields, written through the caller's logger (in a model
worker MMS prefixes it with its own time and logger name and ships it to stdout, which
SageMaker sends to CloudWatch Logs; the model cache's go to the front end's log).
``SCORER_LOG_FORMAT`` picks the form:

* ``json`` (default): one JSON object, ``{"event": ..., "time": ..., <fields>}``, keys
  sorted, so CloudWatch Logs Insights can query it (``fields model, status, ms``);
* ``text``: ``event key=value ...`` in the same order, for a developer's terminal.

A line never holds a payload or a traceback: callers pass sizes, statuses and messages.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

FORMATS = ("json", "text")


def event_line(event: str, fields: dict[str, Any], log_format: str = "json") -> str:
    """One event as a line in ``log_format`` (``json`` or ``text``), stamped with the time
    (UTC, ISO 8601 with milliseconds)."""
    stamped = {"time": _now(), **fields}
    if log_format == "text":
        pairs = " ".join(f"{key}={_text(stamped[key])}" for key in sorted(stamped))
        return f"{event} {pairs}"
    return json.dumps({"event": event, **stamped}, default=str, sort_keys=True)


def log_event(
    logger: logging.Logger,
    event: str,
    log_format: str = "json",
    level: int = logging.INFO,
    /,
    **fields: Any,
) -> None:
    """Write one event line to ``logger`` at ``level`` (built only if the level is on)."""
    if logger.isEnabledFor(level):
        logger.log(level, event_line(event, fields, log_format))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{_text(v)}" for k, v in sorted(value.items()))
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text

"""The model cache's settings, read once from an environment mapping.

Environment variables (scorer's own; the container's self-managed multi-model mode and the
local emulator both read them):

==============================  ==========================================================
``SCORER_MODEL_PREFIX``         where model keys resolve: a directory or ``s3://bucket/p/``
``SCORER_CACHE_DIR``            cache root; models go to ``<root>/<hash>/model``
                                (default ``/opt/ml/models``, as on SageMaker)
``SCORER_CACHE_MAX_MODELS``     most models resident at once (default 0: no limit)
``SCORER_CACHE_MAX_MEMORY``     host memory budget for resident models, bytes or with a
                                K/M/G/T suffix (``4G``, ``512MiB``; default: no limit)
``SCORER_CACHE_LOAD_WAIT``      seconds a request waits for a loading model before
                                ModelNotReady (default 60, SageMaker's)
``SCORER_CACHE_GPU_MEMORY_FRACTION``  GPU memory budget as a fraction (0-1] of the visible
                                GPUs' memory (self-managed mode on GPU; default: no limit)
``SCORER_LOG_FORMAT``           the cache's event lines: ``json`` (default) or ``text``
==============================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scorer.config import (
    CACHE_DIR,
    CACHE_GPU_MEMORY_FRACTION,
    CACHE_LOAD_WAIT,
    CACHE_MAX_MEMORY,
    CACHE_MAX_MODELS,
    MODEL_PREFIX,
    read_log_format,
)
from scorer.errors import ConfigError

DEFAULT_CACHE_DIR = Path("/opt/ml/models")
DEFAULT_LOAD_WAIT_SECONDS = 60.0
"""SageMaker answers ModelNotReadyException when a multi-model load takes longer than this."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class CacheSettings:
    """What the model cache needs to know; see the module docstring for the variables.

    Attributes:
        model_prefix: a directory or ``s3://bucket/prefix/``; None when not configured.
        cache_dir: the cache root (also the model server's models root).
        max_models: most resident models, or None for no limit.
        max_memory_bytes: host memory budget, or None for no limit.
        load_wait_seconds: how long a request waits for a loading model.
        gpu_memory_fraction: the GPU memory budget as a fraction, or None for no limit.
        log_format: the cache's event lines, ``json`` or ``text`` (``SCORER_LOG_FORMAT``).
    """

    model_prefix: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    max_models: int | None = None
    max_memory_bytes: int | None = None
    load_wait_seconds: float = DEFAULT_LOAD_WAIT_SECONDS
    gpu_memory_fraction: float | None = None
    log_format: str = "json"

    def __post_init__(self) -> None:
        if self.gpu_memory_fraction is not None and not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError(
                f"{CACHE_GPU_MEMORY_FRACTION} must be in (0, 1], got {self.gpu_memory_fraction}"
            )
        if self.max_models is not None and self.max_models < 1:
            raise ConfigError(f"the model limit must be at least 1, got {self.max_models}")
        if self.max_memory_bytes is not None and self.max_memory_bytes < 1:
            raise ConfigError(f"the memory budget must be positive, got {self.max_memory_bytes}")
        if not self.load_wait_seconds > 0:
            raise ConfigError(f"the load wait must be positive, got {self.load_wait_seconds}")


def parse_size(text: str) -> int:
    """Bytes from ``"1073741824"``, ``"512M"``, ``"4G"``, ``"2GiB"`` or ``"1.5g"`` (powers of 1024).

    Raises:
        ValueError: the text is not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G/T suffix, e.g. 4G)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def _optional_int(environ: Mapping[str, str], key: str) -> int | None:
    raw = (environ.get(key) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")
    return value or None


def load_cache_settings(environ: Mapping[str, str]) -> CacheSettings:
    """Read :class:`CacheSettings` from ``environ`` (e.g. ``os.environ``), once, at start-up.

    Raises:
        ConfigError: a variable is set to a value that cannot be used.
    """
    memory_raw = (environ.get(CACHE_MAX_MEMORY) or "").strip()
    try:
        memory = parse_size(memory_raw) if memory_raw else None
    except ValueError as exc:
        raise ConfigError(f"{CACHE_MAX_MEMORY}: {exc}") from None
    wait_raw = (environ.get(CACHE_LOAD_WAIT) or "").strip()
    try:
        wait = float(wait_raw) if wait_raw else DEFAULT_LOAD_WAIT_SECONDS
    except ValueError:
        raise ConfigError(
            f"{CACHE_LOAD_WAIT} must be a number of seconds, got {wait_raw!r}"
        ) from None
    fraction_raw = (environ.get(CACHE_GPU_MEMORY_FRACTION) or "").strip()
    try:
        fraction = float(fraction_raw) if fraction_raw else None
    except ValueError:
        raise ConfigError(
            f"{CACHE_GPU_MEMORY_FRACTION} must be a fraction like 0.8, got {fraction_raw!r}"
        ) from None
    return CacheSettings(
        gpu_memory_fraction=fraction,
        model_prefix=(environ.get(MODEL_PREFIX) or "").strip() or None,
        cache_dir=Path(environ.get(CACHE_DIR) or DEFAULT_CACHE_DIR),
        max_models=_optional_int(environ, CACHE_MAX_MODELS),
        max_memory_bytes=memory or None,
        load_wait_seconds=wait,
        log_format=read_log_format(environ),
    )

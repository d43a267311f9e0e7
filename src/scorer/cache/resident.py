"""A snapshot of one model held by the cache (what callers and budget meters see)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class ResidentModel:
    """One model fetched, extracted and registered with the model server.

    Attributes:
        key: the model key (SageMaker's TargetModel), e.g. ``creative-v3.tar.gz``.
        name: the model server's name for it (a hash of the key, ``<hash>-r<N>`` once
            reloaded); invoke it by this name.
        model_dir: the extracted model, ``<cache root>/<name>/model``.
        archive_bytes: the archive's size as fetched.
        extracted_bytes: the size of the extracted files.
        footprint: bytes per budget name (``host_memory``, ``gpu_memory``...), as measured
            after the load.
        load_ms: how long the fetch, check, extraction and registration took.
        in_flight: requests holding the model when the snapshot was taken.
    """

    key: str
    name: str
    model_dir: Path
    archive_bytes: int
    extracted_bytes: int
    footprint: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    load_ms: float = 0.0
    in_flight: int = 0

"""The model cache: resolve -> fetch (directory or S3) -> check -> safe extract -> register
with the model server (through the abstract :class:`ModelRegistry`) -> LRU evict. No torch,
no HTTP client and no model-server code: the local SageMaker
Runtime emulator and the container's self-managed multi-model mode both use it.

Typical use::

    registry = ...  # a ModelRegistry, e.g. scorer.modelserver.registry.MmsModelRegistry
    cache = ModelCache.from_settings(load_cache_settings(os.environ), registry)
    await cache.start()
    async with cache.use("creative-v3.tar.gz") as model:
        ...  # invoke the model server's model ``model.name``
    await cache.aclose()
"""

from scorer.cache.budgets import (
    HOST_MEMORY,
    Budget,
    ExtractedSizeMeter,
    FootprintMeter,
    RegistryMemoryMeter,
    host_memory_budget,
)
from scorer.cache.cache import MODEL_SUBDIR, ModelCache, ModelLease
from scorer.cache.errors import InvalidModelKeyError, ModelNotReadyError, ModelSourceError
from scorer.cache.keys import HASH_CHARS, MAX_KEY_LENGTH, model_hash, validate_model_key
from scorer.cache.registry import ModelRegistry
from scorer.cache.resident import ResidentModel
from scorer.cache.settings import CacheSettings, load_cache_settings, parse_size
from scorer.cache.sources import DirectorySource, ModelSource, S3Source, open_source
from scorer.cache.stats import CacheStats

__all__ = [
    "HASH_CHARS",
    "HOST_MEMORY",
    "MAX_KEY_LENGTH",
    "MODEL_SUBDIR",
    "Budget",
    "CacheSettings",
    "CacheStats",
    "DirectorySource",
    "ExtractedSizeMeter",
    "FootprintMeter",
    "InvalidModelKeyError",
    "ModelCache",
    "ModelLease",
    "ModelNotReadyError",
    "ModelRegistry",
    "ModelSource",
    "ModelSourceError",
    "RegistryMemoryMeter",
    "ResidentModel",
    "S3Source",
    "host_memory_budget",
    "load_cache_settings",
    "model_hash",
    "open_source",
    "parse_size",
    "validate_model_key",
]

"""Resource budgets: limits on what resident models may use together, and how to measure it.

A :class:`Budget` names a resource (``host_memory``; the GPU mode adds ``gpu_memory``), a
limit in bytes and a :class:`FootprintMeter` that measures one loaded model. The cache
measures each model once, right after its load, and evicts least recently used models
while the sum of footprints exceeds any budget. Before a load it makes room for an
estimate: the mean footprint of the resident models (models on one endpoint are similarly
sized), or the archive's unpacked size when none is resident.

Host memory (:func:`host_memory_budget`) is the resident memory of the model's worker
processes as the model server reports it (:meth:`ModelRegistry.memory_bytes`), falling
back to the extracted size when the server cannot say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scorer.cache.registry import ModelRegistry
from scorer.cache.resident import ResidentModel

HOST_MEMORY = "host_memory"


@runtime_checkable
class FootprintMeter(Protocol):
    """Measures how much of one resource a loaded model uses."""

    async def measure(self, model: ResidentModel) -> int | None:
        """Bytes used by ``model``, or None when unknown (the extracted size is used)."""
        ...


@dataclass(frozen=True)
class Budget:
    """A limit on the sum of the resident models' footprints for one resource."""

    name: str
    limit_bytes: int
    meter: FootprintMeter

    def __post_init__(self) -> None:
        if self.limit_bytes <= 0:
            raise ValueError(f"budget {self.name!r} needs a positive limit, got {self.limit_bytes}")


class RegistryMemoryMeter:
    """Host memory of a model's worker processes, as its model server reports it."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def measure(self, model: ResidentModel) -> int | None:
        """The registry's figure, or None (then the extracted size is used)."""
        return await self._registry.memory_bytes(model.name)


class ExtractedSizeMeter:
    """The extracted files' size: a stand-in for a resource nothing else can measure."""

    async def measure(self, model: ResidentModel) -> int | None:
        """``model.extracted_bytes``."""
        return model.extracted_bytes


def host_memory_budget(limit_bytes: int, registry: ModelRegistry) -> Budget:
    """The host memory budget, measured through the model server's registry."""
    return Budget(HOST_MEMORY, limit_bytes, RegistryMemoryMeter(registry))


GPU_MEMORY = "gpu_memory"

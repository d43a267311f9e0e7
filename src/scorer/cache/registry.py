"""The model registry port: how the cache tells a model server to load and unload models.

The cache depends only on this interface.
:class:`~scorer.modelserver.registry.MmsModelRegistry`
implements it over Multi Model Server's management API (``POST /models``,
``DELETE /models/{name}``); unit tests use an in-memory fake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelRegistry(Protocol):
    """A model server that loads extracted model directories by name."""

    async def register(self, name: str, model_dir: Path) -> None:
        """Load ``model_dir`` under ``name`` and return once it can serve.

        Raises:
            ModelAlreadyRegisteredError: a model of that name is already loaded.
            InsufficientMemoryError: the server ran out of memory loading it (507).
            ModelLoadFailedError: the model failed to load (its worker failed).
            ModelServerUnavailableError: the server cannot be reached.
        """
        ...

    async def unregister(self, name: str) -> None:
        """Unload ``name`` and free its resources; a name that is not loaded is no error.

        Raises:
            ModelServerUnavailableError: the server cannot be reached.
        """
        ...

    async def memory_bytes(self, name: str) -> int | None:
        """Host memory the loaded model uses (its worker processes), or None if unknown."""
        ...

    async def aclose(self) -> None:
        """Release the registry's own resources (connections)."""
        ...

"""The model registry over Multi Model Server's management API.

Implements the cache's :class:`~scorer.cache.registry.ModelRegistry` port (structurally:
nothing here imports the cache). ``POST /models {"model_name", "url"}`` loads,
``DELETE /models/{name}`` unloads, as SageMaker's multi-model contract does. Status codes
map to scorer's errors: 409 -> :class:`ModelAlreadyRegisteredError`, 507 ->
:class:`InsufficientMemoryError`, any other failure -> :class:`ModelLoadFailedError` (the
worker's traceback is in the server's log, never in the message), no connection ->
:class:`ModelServerUnavailableError`.

Host memory of a model: MMS reports a worker's ``memoryUsage`` in ``GET /models/{name}``,
but only after its metrics collector has run (every minute; 0 before). When the server's
process id is known (the server runs on this host), the registry measures the model's
worker processes itself (:func:`scorer.modelserver.workers.worker_memory`). Otherwise it
uses MMS's figure when non-zero, else it answers None (the cache then counts the extracted
size).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from scorer.errors import (
    InsufficientMemoryError,
    ModelAlreadyRegisteredError,
    ModelLoadFailedError,
    ModelServerError,
    ModelServerTimeoutError,
    ScorerError,
)
from scorer.modelserver import load_failures
from scorer.modelserver.client import (
    LOAD_TIMEOUT_SECONDS,
    ModelServerClient,
    error_message,
    reported_memory,
)
from scorer.modelserver.workers import worker_memory


class MmsModelRegistry:
    """Loads and unloads models through an MMS management API."""

    def __init__(
        self,
        client: ModelServerClient,
        *,
        server_pid: int | None = None,
        log_hint: str = "",
        load_timeout_s: float = LOAD_TIMEOUT_SECONDS,
        load_failures_dir: Path | None = None,
    ) -> None:
        """Args:
        client: the model server's client (the registry closes it in :meth:`aclose`).
        server_pid: the MMS process id when it runs on this host (memory is measured).
        log_hint: where the server's log is, for load failure messages.
        load_timeout_s: how long one ``POST /models`` may take.
        load_failures_dir: where the server's workers record why a load failed (the server
            runs on this host); the reason then goes into the error message.
        """
        self.client = client
        self.server_pid = server_pid
        self.log_hint = log_hint
        self.load_timeout_s = load_timeout_s
        self.load_failures_dir = load_failures_dir

    @property
    def management_url(self) -> str:
        """The management API's base URL."""
        return self.client.base_url

    async def register(self, name: str, model_dir: Path) -> None:
        """``POST /models``; see :meth:`ModelRegistry.register` for the errors."""
        started = time.time()
        try:
            response = await self.client.register(name, str(model_dir), self.load_timeout_s)
        except ModelServerTimeoutError:
            raise ModelLoadFailedError(
                f"loading took longer than {self.load_timeout_s:g} s{self._see_log()}"
            ) from None
        if response.status_code == 200:
            return
        detail = self._recorded_reason(name, started) or _answered_reason(response)
        if response.status_code == 409:
            raise ModelAlreadyRegisteredError(f"the model server already has {name}: {detail}")
        if response.status_code == 507:
            raise InsufficientMemoryError(f"the model server ran out of memory: {detail}")
        raise ModelLoadFailedError(
            f"the model server answered {response.status_code} ({detail}){self._see_log()}"
        )

    def _recorded_reason(self, name: str, since: float) -> str | None:
        """Why the worker says this load failed, if recorded during this call. A reason that
        quotes the model's own exception (not public) is withheld: only its type."""
        if self.load_failures_dir is None:
            return None
        record = load_failures.read_since(self.load_failures_dir, name, since - 1)
        if not record or not record.get("message"):
            return None
        if not record.get("public"):
            return _withheld(record.get("type"))
        return str(record["message"])

    def _see_log(self) -> str:
        where = f" in {self.log_hint}" if self.log_hint else ""
        return f"; the model's error is in the model server's log{where}"

    async def unregister(self, name: str) -> None:
        """``DELETE /models/{name}`` (a 404 is fine: the model is not loaded)."""
        response = await self.client.unregister(name)
        if response.status_code not in (200, 404):
            raise ModelServerError(
                f"the model server could not unload {name}: {response.status_code} "
                f"{error_message(response)}"
            )

    async def memory_bytes(self, name: str) -> int | None:
        """Host memory of the model's workers (see the module docstring), or None."""
        if self.server_pid is not None:
            measured = await asyncio.to_thread(worker_memory, self.server_pid, name)
            if measured:
                return measured
        try:
            description = await self.client.describe(name)
        except ScorerError:
            return None
        return reported_memory(description) or None

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()


def _answered_reason(response: httpx.Response) -> str:
    """Why MMS says a load failed, when the worker's record cannot be read (a model server on
    another host): its message, except for a 500 from scorer's load failure reporter, which
    quotes the model's own exception (not public, see :mod:`load_failures`): only its type."""
    if response.status_code != 500:
        return error_message(response)
    try:
        kind = response.json().get("type")
    except (ValueError, AttributeError):
        kind = None
    if not kind or kind == "InternalServerException":  # MMS's own fixed answer
        return error_message(response)
    return _withheld(kind)


def _withheld(kind: object) -> str:
    """What a client is told of a load that failed in the model's own code (its type only)."""
    return f"the model's code raised {kind or 'an error'} while loading"

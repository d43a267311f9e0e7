"""The model registry over Multi Model Server's management API (an async httpx client).

``POST /models {"model_name", "url"}`` loads, ``DELETE /models/{name}`` unloads, as
SageMaker's multi-model contract does. Status codes map to the cache's errors: 409 ->
:class:`ModelAlreadyRegisteredError`, 507 -> :class:`InsufficientMemoryError`, any other
failure -> :class:`ModelLoadFailedError` (the worker's traceback is in the server's log,
never in the message), no connection -> :class:`ModelServerUnavailableError`.

Host memory of a model: MMS reports a worker's ``memoryUsage`` in ``GET /models/{name}``,
but only after its metrics collector has run (every minute; 0 before). When the server's
process id is known (the server runs on this host), the registry measures the model's
worker processes itself: the proportional set size (PSS; RSS where PSS is unavailable) of
every process under the server whose command line names the model
(``--model-name <name>``), and its children. Otherwise it uses MMS's figure when non-zero,
else it answers None (the cache then counts the extracted size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from scorer.cache.errors import (
    ModelAlreadyRegisteredError,
    ModelLoadFailedError,
    ModelServerUnavailableError,
)
from scorer.errors import InsufficientMemoryError, ScorerError
from scorer.serving import load_failures

logger = logging.getLogger(__name__)

LOAD_TIMEOUT_SECONDS = 360.0
"""SageMaker lets a multi-model load (and unload) run this long."""
_REQUEST_TIMEOUT_SECONDS = 10.0


def _message(response: httpx.Response) -> str:
    """MMS's ``{"message": ...}`` or the body text, on one short line."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    text = body.get("message") if isinstance(body, dict) else None
    text = str(text) if text else response.text or response.reason_phrase
    return " ".join(text.split())[:300]


class MmsModelRegistry:
    """Loads and unloads models through an MMS management API."""

    def __init__(
        self,
        management_url: str,
        *,
        server_pid: int | None = None,
        log_hint: str = "",
        load_timeout_s: float = LOAD_TIMEOUT_SECONDS,
        load_failures_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Args:
        management_url: the management API's base URL (``http://127.0.0.1:9081``).
        server_pid: the MMS process id when it runs on this host (memory is measured).
        log_hint: where the server's log is, for load failure messages.
        load_timeout_s: how long one ``POST /models`` may take.
        load_failures_dir: where the server's workers record why a load failed (the server
            runs on this host); the reason then goes into the error message.
        transport: an httpx transport (tests).
        """
        self.management_url = management_url.rstrip("/")
        self.server_pid = server_pid
        self.log_hint = log_hint
        self.load_timeout_s = load_timeout_s
        self.load_failures_dir = load_failures_dir
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.management_url,
                timeout=_REQUEST_TIMEOUT_SECONDS,
                transport=self._transport,
                trust_env=False,
            )
        return self._client

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http().request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ModelServerUnavailableError(
                f"the model server at {self.management_url} did not answer {method} {path} "
                f"in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ModelServerUnavailableError(
                f"the model server at {self.management_url} cannot be reached ({exc})"
            ) from None

    async def register(self, name: str, model_dir: Path) -> None:
        """``POST /models``; see :meth:`ModelRegistry.register` for the errors."""
        started = time.time()
        try:
            response = await self._http().post(
                "/models",
                json={"model_name": name, "url": str(model_dir)},
                timeout=self.load_timeout_s,
            )
        except httpx.TimeoutException:
            raise ModelLoadFailedError(
                f"loading took longer than {self.load_timeout_s:g} s{self._see_log()}"
            ) from None
        except httpx.TransportError as exc:
            raise ModelServerUnavailableError(
                f"the model server at {self.management_url} cannot be reached ({exc})"
            ) from None
        if response.status_code == 200:
            return
        detail = self._recorded_reason(name, started) or _message(response)
        if response.status_code == 409:
            raise ModelAlreadyRegisteredError(f"the model server already has {name}: {detail}")
        if response.status_code == 507:
            raise InsufficientMemoryError(f"the model server ran out of memory: {detail}")
        raise ModelLoadFailedError(
            f"the model server answered {response.status_code} ({detail}){self._see_log()}"
        )

    def _recorded_reason(self, name: str, since: float) -> str | None:
        """Why the worker says this load failed, if recorded during this call and public."""
        if self.load_failures_dir is None:
            return None
        path = load_failures.record_path(self.load_failures_dir, name)
        try:
            if path.stat().st_mtime < since - 1:
                return None  # an older failure
        except OSError:
            return None
        record = load_failures.read(self.load_failures_dir, name)
        if not record or not record.get("public") or not record.get("message"):
            return None
        return str(record["message"])

    def _see_log(self) -> str:
        where = f" in {self.log_hint}" if self.log_hint else ""
        return f"; the model's error is in the model server's log{where}"

    async def unregister(self, name: str) -> None:
        """``DELETE /models/{name}`` (a 404 is fine: the model is not loaded)."""
        response = await self._request("DELETE", f"/models/{name}", timeout=LOAD_TIMEOUT_SECONDS)
        if response.status_code not in (200, 404):
            raise ScorerError(
                f"the model server could not unload {name}: {response.status_code} "
                f"{_message(response)}",
                502,
            )

    async def memory_bytes(self, name: str) -> int | None:
        """Host memory of the model's workers (see the module docstring), or None."""
        if self.server_pid is not None:
            measured = await asyncio.to_thread(worker_memory, self.server_pid, name)
            if measured:
                return measured
        try:
            response = await self._request("GET", f"/models/{name}")
        except ScorerError:
            return None
        if response.status_code != 200:
            return None
        return _reported_memory(response) or None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _reported_memory(response: httpx.Response) -> int:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return 0
    described = body if isinstance(body, list) else [body]
    total = 0
    for model in described:
        workers = model.get("workers", []) if isinstance(model, dict) else []
        for worker in workers:
            usage = worker.get("memoryUsage") if isinstance(worker, dict) else None
            if isinstance(usage, int) and usage > 0:
                total += usage
    return total


def worker_processes(server_pid: int, name: str) -> list[psutil.Process]:
    """The processes under ``server_pid`` that serve model ``name`` (and their children).

    A worker is a process whose command line holds ``--model-name <name>`` (workers forked
    by scorer's zygote carry it as their process title: one space-separated string).
    """
    try:
        descendants = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return []
    chosen: dict[int, psutil.Process] = {}
    for process in descendants:
        try:
            cmdline = " ".join(process.cmdline()).split()
        except psutil.Error:
            continue
        for idx, arg in enumerate(cmdline[:-1]):
            if arg == "--model-name" and cmdline[idx + 1] == name:
                chosen[process.pid] = process
                with contextlib.suppress(psutil.Error):
                    chosen.update({c.pid: c for c in process.children(recursive=True)})
                break
    return list(chosen.values())


def worker_memory(server_pid: int, name: str) -> int:
    """PSS (or RSS) of the processes that serve model ``name``; 0 when none is found."""
    total = 0
    for process in worker_processes(server_pid, name):
        try:
            info = process.memory_full_info()
            total += int(getattr(info, "pss", 0) or info.rss)
        except psutil.AccessDenied:
            try:
                total += int(process.memory_info().rss)
            except psutil.Error:
                continue
        except psutil.Error:
            continue
    return total

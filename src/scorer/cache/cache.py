"""The model cache: resolve -> fetch -> check -> safe extract -> register -> LRU evict.

One component, two users: the local SageMaker Runtime emulator and the container's
self-managed multi-model mode. It knows nothing of HTTP framing or torch; it talks to a
:class:`~scorer.cache.sources.ModelSource` and a :class:`~scorer.cache.registry.ModelRegistry`.

What it does for a model key (SageMaker's TargetModel), as the SageMaker platform does:

1. fetch the archive once into a temporary file under the cache root (a directory
   source links it there when it can: no copy);
2. check and extract it in one streaming pass (:func:`~scorer.models.archive.safe_extract`:
   every member is checked before anything is written for it, and a refused archive leaves
   nothing) into ``<root>/<hash>/model`` via a temporary sibling and a rename;
3. make room for it (evictions);
4. register it with the model server under the name ``<hash>``;
5. hand it to callers, counting the requests that hold it.

:meth:`ModelCache.reload` loads a resident model's archive again (it changed at the
source: ``scorer local --watch``) under the next version of its name, ``<hash>-r<N>``,
while the old version keeps serving; then new requests get the new version and the old
one is unloaded once the requests holding it are done. A reload that fails unloads the
old version the same way, so the next request loads the archive again (and fails the
same way until the archive is fixed).

A loaded model serves at once, counted at the estimate room was made for; its footprint is
measured in the background (``cache.measure``), and LRU models are evicted then if the
measure shows a limit exceeded. The load event (``cache.load``) gives each step's duration
(``phases_ms``: fetch, extract, make_room, register) and the archive's sha256.

Concurrent first requests for one key share a single load; a request waits for a loading
model at most ``load_wait_s`` seconds, then gets :class:`ModelNotReadyError` while the load
goes on. Models are unloaded least recently used first when the model count or a
:class:`~scorer.cache.budgets.Budget` is exceeded, never while a request holds them. A 507
from the model server evicts one more model and retries once. Any failure leaves nothing
behind in the cache root and leaves the other models serving.

Everything runs on one asyncio event loop; blocking file work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from scorer.cache import events
from scorer.cache.budgets import Budget, host_memory_budget
from scorer.cache.errors import ModelNotReadyError
from scorer.cache.keys import HASH_CHARS, model_hash, validate_model_key
from scorer.cache.registry import ModelRegistry
from scorer.cache.resident import ResidentModel
from scorer.cache.settings import CacheSettings
from scorer.cache.sources import ModelSource, open_source
from scorer.cache.stats import CacheCounters, CacheStats
from scorer.errors import (
    InsufficientMemoryError,
    ModelAlreadyRegisteredError,
    ModelLoadFailedError,
    ModelServerUnavailableError,
    ScorerError,
)
from scorer.events import log_event
from scorer.models.archive import ArchiveError, ArchiveLimits, ExtractReport, safe_extract

MODEL_SUBDIR = "model"
"""Models go to ``<root>/<name>/model``, as SageMaker's ``/opt/ml/models/<hash>/model``."""
_TEMP_PREFIX = ".scorer-"
_OWNED = re.compile(rf"^(?:[0-9a-f]{{{HASH_CHARS}}}(?:-r\d+)?|\.scorer-(?:fetch|stage)-.+)$")

_T = TypeVar("_T")


@dataclass(eq=False)
class _Entry:
    """A resident model (mutable; callers see :class:`ResidentModel` snapshots).

    ``slot`` is the key's hash, under which the cache holds it; ``name`` is the model
    server's name of this version (the slot, or ``<slot>-r<N>`` after a reload).
    """

    key: str
    name: str
    model_dir: Path
    archive_bytes: int
    extracted_bytes: int
    footprint: dict[str, int] = field(default_factory=dict)
    load_ms: float = 0.0
    in_flight: int = 0
    slot: str = ""
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight drops to 0

    def __post_init__(self) -> None:
        self.slot = self.slot or self.name

    def snapshot(self) -> ResidentModel:
        return ResidentModel(
            key=self.key,
            name=self.name,
            model_dir=self.model_dir,
            archive_bytes=self.archive_bytes,
            extracted_bytes=self.extracted_bytes,
            footprint=MappingProxyType(dict(self.footprint)),
            load_ms=self.load_ms,
            in_flight=self.in_flight,
        )


class ModelLease:
    """A request's hold on a resident model; :meth:`release` it when the request is done."""

    def __init__(self, cache: ModelCache, entry: _Entry) -> None:
        self._cache = cache
        self._entry = entry
        self._released = False
        self.model = entry.snapshot()

    def release(self) -> None:
        """Give the model back (idempotent); it becomes evictable when no request holds it."""
        if not self._released:
            self._released = True
            self._cache._release(self._entry)


class ModelCache:
    """Models fetched from a source, loaded into a model server, evicted LRU."""

    def __init__(
        self,
        source: ModelSource,
        registry: ModelRegistry,
        root: Path,
        *,
        max_models: int | None = None,
        budgets: Sequence[Budget] = (),
        load_wait_s: float = 60.0,
        archive_limits: ArchiveLimits | None = None,
        logger: logging.Logger | None = None,
        log_format: str = "json",
    ) -> None:
        """Args:
        source: where archives are fetched from.
        registry: the model server the models are registered with; the cache closes it.
        root: the cache root; the model server must accept model directories under it.
        max_models: most resident models (None: no limit).
        budgets: resource budgets (host memory, GPU memory...) enforced LRU.
        load_wait_s: how long a request waits for a loading model.
        archive_limits: caps applied to every archive (default :class:`ArchiveLimits`).
        logger: where the event lines go (default ``scorer.cache``).
        log_format: the event lines' form, ``json`` or ``text`` (``SCORER_LOG_FORMAT``).
        """
        if max_models is not None and max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        self.source = source
        self.registry = registry
        self.root = Path(root).absolute()
        self.max_models = max_models
        self.budgets = tuple(budgets)
        self.load_wait_s = load_wait_s
        self.archive_limits = archive_limits or ArchiveLimits()
        self._log = logger or logging.getLogger(events.LOGGER_NAME)
        self._log_format = log_format
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._loading_keys: dict[str, str] = {}
        self._reserved: dict[str, dict[str, int]] = {}  # loads past make-room: estimates
        self._unloading: dict[str, asyncio.Task[None]] = {}  # by model server name
        self._retiring: dict[str, _Entry] = {}  # replaced versions, unloaded once idle
        self._versions: dict[str, int] = {}  # slot -> N of its current name <slot>-r<N>
        self._background: set[asyncio.Task[None]] = set()
        self._counters = CacheCounters()
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: CacheSettings,
        registry: ModelRegistry,
        *,
        source: ModelSource | None = None,
        budgets: Iterable[Budget] = (),
        logger: logging.Logger | None = None,
    ) -> ModelCache:
        """A cache configured from :class:`CacheSettings`.

        The host memory budget (``max_memory_bytes``) is measured through ``registry``;
        ``budgets`` adds others (the GPU mode's device memory budget).

        Raises:
            ValueError: no ``source`` is given and the settings have no model prefix.
        """
        if source is None:
            if not settings.model_prefix:
                raise ValueError("the model cache needs a model prefix (a directory or s3://)")
            source = open_source(settings.model_prefix)
        all_budgets = list(budgets)
        if settings.max_memory_bytes:
            all_budgets.insert(0, host_memory_budget(settings.max_memory_bytes, registry))
        return cls(
            source,
            registry,
            settings.cache_dir,
            max_models=settings.max_models,
            budgets=all_budgets,
            load_wait_s=settings.load_wait_seconds,
            logger=logger,
            log_format=settings.log_format,
        )

    # ------------------------------------------------------------------ public API

    async def start(self) -> None:
        """Create the cache root and remove what an earlier run left in it.

        Only entries the cache itself creates are removed (``<hash>`` directories and
        ``.scorer-*`` temporaries), so a mistaken root loses nothing else.
        """
        await asyncio.to_thread(self._prepare_root)

    def name_for(self, key: str) -> str:
        """The model server name of ``key``.

        Raises:
            InvalidModelKeyError: the key is not a safe relative name.
        """
        return model_hash(validate_model_key(key))

    async def acquire(self, key: str) -> ModelLease:
        """Hold the model ``key``, loading it first if it is not resident.

        Returns:
            A lease; call :meth:`ModelLease.release` when the request is done (or use
            :meth:`use`). Its ``model.name`` is the model server's name for the model.

        Raises:
            InvalidModelKeyError: the key is not a safe relative name (400).
            ModelNotFoundError: no archive has that key under the prefix (404).
            ArchiveError: the archive is corrupt or unsafe (400).
            ModelNotReadyError: the load takes longer than the wait budget (429).
            ModelLoadFailedError: the model server failed to load the model (500).
            InsufficientMemoryError: out of memory even after an eviction (507).
            ModelSourceError: the source failed (502).
            ModelServerUnavailableError: the model server is down or the cache closed (503).
        """
        key = validate_model_key(key)
        name = model_hash(key)
        if self._closed:
            raise ModelServerUnavailableError("the model cache is shut down")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.load_wait_s
        missed = False
        outcome = "error"
        try:
            while True:
                entry = self._entries.get(name)
                if entry is not None:
                    entry.in_flight += 1
                    self._entries.move_to_end(name)
                    outcome = "loaded"
                    if not missed:
                        self._counters.hits += 1
                        self._event(
                            events.HIT, model=key, name=entry.name,
                            bytes=entry.extracted_bytes, ms=0.0,
                        )  # fmt: skip
                    return ModelLease(self, entry)
                if not missed:
                    missed = True
                    self._counters.misses += 1
                task = self._loading.get(name) or self._start_load(key, name)
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    await asyncio.wait_for(asyncio.shield(task), remaining)
                except TimeoutError:
                    outcome = "not_ready"
                    raise ModelNotReadyError(
                        f"model {key!r} is still loading after {self.load_wait_s:g} s; "
                        "the load continues, retry the request later"
                    ) from None
        finally:
            if missed:
                loaded = self._entries.get(name)
                self._event(
                    events.MISS, model=key, name=loaded.name if loaded else name,
                    outcome=outcome,
                    bytes=loaded.extracted_bytes if loaded else 0,
                    ms=round((loop.time() - started) * 1000, 1),
                )  # fmt: skip

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[ResidentModel]:
        """``async with cache.use(key) as model:`` hold the model for one request.

        Raises the same errors as :meth:`acquire`.
        """
        lease = await self.acquire(key)
        try:
            yield lease.model
        finally:
            lease.release()

    async def evict(self, key: str) -> bool:
        """Unload ``key`` now; False if it is not resident or a request holds it."""
        entry = self._entries.get(self.name_for(key))
        if entry is None or entry.in_flight:
            return False
        await self._evict(entry, "requested")
        return True

    async def discard(self, model: ResidentModel) -> None:
        """Forget a model the model server lost (e.g. it restarted), even if it is held.

        The next request for its key loads it again. Requests holding it keep their
        leases, which then release nothing.
        """
        entry = self._entries.get(model_hash(model.key))
        if entry is not None and entry.name == model.name:
            await self._evict(entry, "lost")

    async def reload(self, key: str) -> bool:
        """Load ``key``'s archive again (it changed at the source), if the model is resident.

        The new version loads under the next name, ``<hash>-r<N>``, while requests keep
        getting the resident one; once it is registered, new requests get it and the old
        version is unloaded as soon as no request holds it. If the new version fails, the
        old one is unloaded the same way and the error is raised: the next request loads
        the archive again. A load of ``key`` in progress is waited for first.

        Returns:
            True if a new version serves; False if ``key`` is not resident (the next
            request loads the archive as it is now) or the cache is shut down.

        Raises:
            The errors of :meth:`acquire`, except :class:`ModelNotReadyError` (this waits
            for the load).
        """
        key = validate_model_key(key)
        slot = model_hash(key)
        while not self._closed:
            loading = self._loading.get(slot)
            if loading is not None:
                await asyncio.gather(asyncio.shield(loading), return_exceptions=True)
                continue  # it may have read the archive before it changed: load it again
            entry = self._entries.get(slot)
            if entry is None:
                return False
            await asyncio.shield(self._start_load(key, slot, replacing=entry))
            return True
        return False

    def retiring(self) -> tuple[ResidentModel, ...]:
        """Replaced versions (:meth:`reload`) still held by requests, unloaded once idle."""
        return tuple(entry.snapshot() for entry in self._retiring.values())

    def resident(self) -> tuple[ResidentModel, ...]:
        """The resident models, least recently used first."""
        return tuple(entry.snapshot() for entry in self._entries.values())

    def stats(self) -> CacheStats:
        """A snapshot of the counters, the resident models and their footprints."""
        counters = self._counters
        footprint = {
            budget.name: sum(e.footprint.get(budget.name, 0) for e in self._entries.values())
            for budget in self.budgets
        }
        footprint["extracted"] = sum(e.extracted_bytes for e in self._entries.values())
        return CacheStats(
            hits=counters.hits,
            misses=counters.misses,
            loads=counters.loads,
            evictions=counters.evictions,
            failures=counters.failures,
            resident_models=tuple(e.key for e in self._entries.values()),
            loading=tuple(self._loading_keys.get(n, n) for n in self._loading),
            footprint=MappingProxyType(footprint),
            last_load_ms=counters.last_load_ms,
        )

    async def aclose(self, *, unload: bool = False) -> None:
        """Stop: cancel loads in progress, wait for evictions, close the registry.

        Args:
            unload: also unload every resident model from the model server and remove its
                directory (for a model server that outlives the cache).
        """
        self._closed = True
        loads = list(self._loading.values())
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, *self._background, return_exceptions=True)
        for retired in self._retiring.values():
            retired.idle.set()  # closed: unloaded now, held or not
        if unload:
            for entry in list(self._entries.values()):
                await self._evict(entry, "shutdown")
        await asyncio.gather(*self._unloading.values(), return_exceptions=True)
        await self.registry.aclose()

    # ------------------------------------------------------------------ loading

    def _start_load(
        self, key: str, slot: str, replacing: _Entry | None = None
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(
            self._load(key, slot, replacing), name=f"scorer-cache-load-{slot}"
        )
        self._loading[slot] = task
        self._loading_keys[slot] = key

        def _done(done: asyncio.Task[None]) -> None:
            if self._loading.get(slot) is done:
                del self._loading[slot]
                self._loading_keys.pop(slot, None)
            if not done.cancelled():
                done.exception()  # retrieved: waiters may all have timed out

        task.add_done_callback(_done)
        return task

    async def _load(self, key: str, slot: str, replacing: _Entry | None = None) -> None:
        started = time.perf_counter()
        phases = _Phases()
        if replacing is not None:
            self._versions[slot] = self._versions.get(slot, 0) + 1
        version = self._versions.get(slot, 0)
        name = f"{slot}-r{version}" if version else slot
        pending_unload = self._unloading.get(name)
        if pending_unload is not None:
            await asyncio.shield(pending_unload)
        token = secrets.token_hex(4)
        download = self.root / f"{_TEMP_PREFIX}fetch-{name}-{token}"
        archive = download / (key.rsplit("/", 1)[-1])  # archive errors name the file
        staging = self.root / f"{_TEMP_PREFIX}stage-{name}-{token}"
        final = self.root / name
        fetched = 0
        registering = False
        try:
            await asyncio.to_thread(download.mkdir)
            fetched = await _finish_in_thread(
                self.source.fetch(key, archive, self.archive_limits.max_total_bytes)
            )
            phases.done("fetch")
            try:
                report = await _finish_in_thread(
                    asyncio.to_thread(self._extract, archive, staging, final)
                )
            except ArchiveError as exc:
                raise type(exc)(f"model {key!r} cannot be used: {exc.message}") from exc
            await _finish_in_thread(asyncio.to_thread(_remove_all, (download,)))
            phases.done("extract")
            if replacing is None:  # a new version replaces the old one: no room to make
                await self._make_room(name, report.total_bytes)
            phases.done("make_room")
            model_dir = final / MODEL_SUBDIR
            registering = True
            try:
                await self._register(name, model_dir, slot)
            except ModelLoadFailedError as exc:
                raise ModelLoadFailedError(f"model {key!r} failed to load: {exc.message}") from exc
            except InsufficientMemoryError as exc:
                raise InsufficientMemoryError(
                    f"model {key!r} does not fit in the model server's memory: {exc.message}"
                ) from exc
            phases.done("register")
            entry = _Entry(key, name, model_dir, fetched, report.total_bytes, slot=slot)
            # Serving starts now, counted at the estimate room was made for (a new version:
            # the old one's footprint); the measured footprint replaces it in the background
            # (meters scan processes, nvidia-smi).
            estimate = self._reserved.get(name) or (replacing.footprint if replacing else {})
            entry.footprint = dict(estimate)
            entry.load_ms = round((time.perf_counter() - started) * 1000, 1)
            self._reserved.pop(name, None)
            previous = self._entries.get(slot)
            self._entries[slot] = entry
            if previous is not None:
                self._retire(previous, "replaced")
        except BaseException as exc:
            self._reserved.pop(name, None)
            if replacing is not None and isinstance(exc, Exception):
                self._retire(replacing, "replaced")  # until fixed, requests load it again
            if registering:
                await _quietly(self.registry.unregister(name))
            await _finish_in_thread(asyncio.to_thread(_remove_all, (download, staging, final)))
            self._counters.failures += 1
            self._event(
                events.FAILURE, model=key, name=name, bytes=fetched,
                ms=round((time.perf_counter() - started) * 1000, 1),
                error=type(exc).__name__, message=str(exc)[:500],
            )  # fmt: skip
            raise
        self._counters.loads += 1
        self._counters.last_load_ms = entry.load_ms
        self._event(
            events.LOAD, model=key, name=name, bytes=entry.extracted_bytes,
            archive_bytes=fetched, footprint=entry.footprint, ms=entry.load_ms,
            phases_ms=phases.ms, sha256=report.sha256,
            **({"replaces": replacing.name} if replacing is not None else {}),
        )  # fmt: skip
        if self.budgets:
            task = asyncio.get_running_loop().create_task(self._measure_loaded(entry))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            await self._enforce_limits(exclude={slot})

    async def _measure_loaded(self, entry: _Entry) -> None:
        """Measure a model that just became resident, then evict LRU models if over a limit
        (never the model just loaded)."""
        started = time.perf_counter()
        footprint = await self._measure(entry)
        if self._entries.get(entry.slot) is not entry:
            return  # evicted, discarded or replaced meanwhile
        entry.footprint = footprint
        self._event(
            events.MEASURE, model=entry.key, name=entry.name,
            footprint=footprint, ms=round((time.perf_counter() - started) * 1000, 1),
        )  # fmt: skip
        await self._enforce_limits(exclude={entry.slot})

    async def settle(self) -> None:
        """Wait for background work: footprint measurements and the evictions they cause."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _extract(self, archive: Path, staging: Path, final: Path) -> ExtractReport:
        """Check and extract in one streaming pass (nothing is left if the archive is
        refused), then move the model into place."""
        staging.mkdir()
        report = safe_extract(archive, staging / MODEL_SUBDIR, self.archive_limits)
        if final.exists():  # left by an unload that could not remove it
            shutil.rmtree(final)
        staging.rename(final)
        return report

    async def _register(self, name: str, model_dir: Path, slot: str) -> None:
        try:
            await self._register_once(name, model_dir)
        except InsufficientMemoryError:
            await _quietly(self.registry.unregister(name))
            victim = self._victim(exclude={slot})
            if victim is None:
                raise
            await self._evict(victim, "insufficient_memory")
            await self._register_once(name, model_dir)

    async def _register_once(self, name: str, model_dir: Path) -> None:
        try:
            await self.registry.register(name, model_dir)
        except ModelAlreadyRegisteredError:
            # The cache owns every name it registers, and loads of one name are single
            # flight: the server holds a stale copy from an earlier run. Replace it.
            await self.registry.unregister(name)
            await self.registry.register(name, model_dir)

    async def _measure(self, entry: _Entry) -> dict[str, int]:
        snapshot = entry.snapshot()
        footprint: dict[str, int] = {}
        for budget in self.budgets:
            try:
                value = await budget.meter.measure(snapshot)
            except Exception:
                self._log.warning(
                    "measuring %s for %s failed", budget.name, entry.key, exc_info=True
                )
                value = None
            footprint[budget.name] = entry.extracted_bytes if value is None else int(value)
        return footprint

    # ------------------------------------------------------------------ limits

    def _estimate(self, budget: Budget, extracted_bytes: int) -> int:
        known = [
            e.footprint[budget.name] for e in self._entries.values() if budget.name in e.footprint
        ]
        return round(sum(known) / len(known)) if known else extracted_bytes

    def _used(self, budget: Budget) -> int:
        resident = sum(e.footprint.get(budget.name, 0) for e in self._entries.values())
        return resident + sum(r.get(budget.name, 0) for r in self._reserved.values())

    def _over_limits(self, incoming: dict[str, int] | None = None) -> bool:
        """Whether the resident and reserved models, plus ``incoming``, exceed a limit."""
        count = len(self._entries) + len(self._reserved) + (0 if incoming is None else 1)
        if self.max_models is not None and count > self.max_models:
            return True
        extra = incoming or {}
        return any(
            self._used(budget) + extra.get(budget.name, 0) > budget.limit_bytes
            for budget in self.budgets
        )

    async def _make_room(self, name: str, extracted_bytes: int) -> None:
        incoming = {b.name: self._estimate(b, extracted_bytes) for b in self.budgets}
        while self._over_limits(incoming):
            victim = self._victim(exclude=set())
            if victim is None:
                break
            await self._evict(victim, "limit")
        self._reserved[name] = incoming

    async def _enforce_limits(self, exclude: set[str]) -> None:
        """Evict LRU models while over a limit, never the most recently used one."""
        while self._over_limits() and self._entries:
            newest = next(reversed(self._entries))
            victim = self._victim(exclude=exclude | {newest})
            if victim is None:
                return
            await self._evict(victim, "limit")

    def _victim(self, exclude: set[str]) -> _Entry | None:
        for name, entry in self._entries.items():
            if entry.in_flight == 0 and name not in exclude:
                return entry
        return None

    def _release(self, entry: _Entry) -> None:
        entry.in_flight -= 1
        if entry.in_flight == 0:
            entry.idle.set()
        if (
            entry.in_flight == 0
            and not self._closed
            and self._entries.get(entry.slot) is entry
            and self._over_limits()
        ):
            task = asyncio.get_running_loop().create_task(self._enforce_limits(exclude=set()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ unloading

    async def _evict(self, entry: _Entry, reason: str) -> None:
        if self._entries.get(entry.slot) is entry:
            del self._entries[entry.slot]
        task = asyncio.get_running_loop().create_task(self._unload(entry, reason))
        self._unloading[entry.name] = task

        def _done(done: asyncio.Task[None]) -> None:
            if self._unloading.get(entry.name) is done:
                del self._unloading[entry.name]

        task.add_done_callback(_done)
        await asyncio.shield(task)

    def _retire(self, entry: _Entry, reason: str) -> None:
        """Hand ``entry`` (a replaced version) to no new request; unload it once idle."""
        if self._entries.get(entry.slot) is entry:
            del self._entries[entry.slot]
        self._retiring[entry.name] = entry
        task = asyncio.get_running_loop().create_task(self._unload_when_idle(entry, reason))
        self._unloading[entry.name] = task

        def _done(done: asyncio.Task[None]) -> None:
            if self._unloading.get(entry.name) is done:
                del self._unloading[entry.name]
            if self._retiring.get(entry.name) is entry:
                del self._retiring[entry.name]

        task.add_done_callback(_done)

    async def _unload_when_idle(self, entry: _Entry, reason: str) -> None:
        while entry.in_flight > 0 and not self._closed:
            entry.idle.clear()
            await entry.idle.wait()
        await self._unload(entry, reason)

    async def _unload(self, entry: _Entry, reason: str) -> None:
        started = time.perf_counter()
        error: str | None = None
        try:
            await self.registry.unregister(entry.name)
        except ScorerError as exc:
            error = exc.message
        finally:
            await asyncio.to_thread(_remove_all, (self.root / entry.name,))
        self._counters.evictions += 1
        fields: dict[str, object] = {
            "name": entry.name,
            "bytes": entry.extracted_bytes,
            "footprint": entry.footprint,
            "reason": reason,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if error:
            fields["unload_error"] = error
        self._event(events.EVICT, model=entry.key, **fields)

    def _event(self, event: str, *, model: str, **fields: object) -> None:
        """One cache event line (failures at WARNING)."""
        level = logging.WARNING if event == events.FAILURE else logging.INFO
        log_event(self._log, event, self._log_format, level, model=model, **fields)

    # ------------------------------------------------------------------ files

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        leftovers = [p for p in self.root.iterdir() if _OWNED.match(p.name)]
        _remove_all(leftovers)


class _Phases:
    """How long each step of one load took, in ms (for the load event)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[phase] = round((now - self._last) * 1000, 1)
        self._last = now


async def _finish_in_thread(work: Awaitable[_T]) -> _T:
    """Await ``work``; if cancelled meanwhile, let it finish first (threads cannot stop)."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


async def _quietly(work: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await work


def _remove_all(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            logging.getLogger(events.LOGGER_NAME).warning(
                "could not remove %s", path, exc_info=True
            )

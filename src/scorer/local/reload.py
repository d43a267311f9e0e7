"""Hot reload for ``scorer local --watch``: a model whose files change is loaded again.

The model server keeps running; a changed model is registered again under a new name next
to the old one, so that no request sees a half-loaded model and none is cut off:

1. the new version loads (``POST /models``) while requests keep going to the old one;
2. once it is registered, new requests go to it;
3. the old version is unregistered (``DELETE /models/<name>``) when the requests that
   were already using it have finished on it.

If the new version fails to load (a syntax error, a missing name, a ``model_fn`` that
raises), the old one is unloaded the same way and requests get a ``ModelError`` whose
message says why: the error's type and message and where in the model's files it arose
(``code/inference.py, line 7``, recorded by the worker). On a developer's own endpoint
that reason is shown in full, even when it quotes the model's own exception (which the
model server's registry otherwise keeps to the log): :class:`DeveloperRegistry`. Saving a
fixed file loads the model again and it serves.

Single model (``--model-dir DIR``): :class:`ModelVersions` registers the model itself,
``model-r1``, ``model-r2``... (the model server runs without a startup model), from
``DIR`` as it is (a directory) or from its own extraction of the archive (``model.tar.gz``).
It watches the whole directory (``code/`` and the model files), or the archive.

Model prefix (a directory): :class:`ArchiveReloader` asks the model cache to reload an
archive that changed, if it is loaded (:meth:`scorer.cache.cache.ModelCache.reload`: the
new version is ``<hash>-r<N>``); one that is not loaded is read as it is by the next
request that names it.

Changes are debounced (:mod:`scorer.local.watch`); loads of one model run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from scorer.cache.cache import ModelCache
from scorer.cache.errors import InvalidModelKeyError, ModelNotReadyError
from scorer.cache.registry import ModelRegistry
from scorer.errors import (
    InsufficientMemoryError,
    ModelLoadFailedError,
    ModelServerUnavailableError,
    ScorerError,
)
from scorer.models.archive import safe_extract
from scorer.modelserver import load_failures
from scorer.modelserver.registry import MmsModelRegistry

logger = logging.getLogger("scorer.local")

VERSION_PREFIX = "model-r"
"""A single model's versions are ``model-r1``, ``model-r2``... on the model server."""
_KEPT_ERRORS = (ModelLoadFailedError, InsufficientMemoryError, ModelServerUnavailableError)


class DeveloperRegistry:
    """The model server's registry, saying in full why a load failed.

    :class:`~scorer.modelserver.registry.MmsModelRegistry` keeps a reason that quotes the
    model's own exception out of its error (an endpoint's clients are not its developer).
    Behind ``scorer local --watch`` the client is the developer, so the worker's record
    (type, message, file and line) goes into the error.
    """

    def __init__(self, registry: MmsModelRegistry) -> None:
        self.inner = registry

    async def register(self, name: str, model_dir: Path) -> None:
        """``POST /models``; a failed load's error carries the worker's full reason."""
        started = time.time()
        try:
            await self.inner.register(name, model_dir)
        except ModelLoadFailedError:
            folder = self.inner.load_failures_dir
            record = load_failures.read_since(folder, name, started - 1) if folder else None
            if record is None or record.get("public") or not record.get("message"):
                raise
            where = f" in {self.inner.log_hint}" if self.inner.log_hint else ""
            raise ModelLoadFailedError(
                f"the model server answered {record.get('status', 500)} ({record['message']}); "
                f"the traceback is in the model server's log{where}"
            ) from None

    async def unregister(self, name: str) -> None:
        """``DELETE /models/{name}``."""
        await self.inner.unregister(name)

    async def memory_bytes(self, name: str) -> int | None:
        """The model's host memory, as the registry measures it."""
        return await self.inner.memory_bytes(name)

    async def aclose(self) -> None:
        """Close the registry's client."""
        await self.inner.aclose()


@dataclass(eq=False)
class _Version:
    """One registered version of the single model."""

    name: str
    model_dir: Path
    extracted: Path | None  # its own extraction of the archive, removed once unloaded
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight drops to 0


class ModelVersions:
    """The versions of a single model (a directory or an archive) on the model server."""

    def __init__(
        self,
        source: Path,
        registry: ModelRegistry,
        versions_dir: Path,
        *,
        load_wait_s: float = 60.0,
    ) -> None:
        """Args:
        source: the model directory or ``model.tar.gz``.
        registry: the model server's registry (closed by :meth:`aclose`); it must accept
            ``source`` (a directory) or ``versions_dir`` (archives) as a model's location.
        versions_dir: where each version of an archive is extracted (``<dir>/model-r<N>``).
        load_wait_s: how long a request waits for the first load.
        """
        self.source = source.absolute()
        self.is_archive = not self.source.is_dir()
        self.registry = registry
        self.versions_dir = versions_dir
        self.load_wait_s = load_wait_s
        self._current: _Version | None = None
        self._failure: tuple[type[ScorerError], str] | None = None
        self._loaded = asyncio.Event()  # the first load is over (serving or failed)
        self._lock = asyncio.Lock()
        self._generation = 0
        self._retiring: dict[str, tuple[_Version, asyncio.Task[None]]] = {}
        self._closed = False

    # ------------------------------------------------------------------ loading

    async def load(self) -> bool:
        """Load the model's files as they are now as the next version.

        Returns:
            True if it serves; False if it failed to load (requests then get the error).
        """
        async with self._lock:
            if self._closed:
                return False
            self._generation += 1
            name = f"{VERSION_PREFIX}{self._generation}"
            extracted: Path | None = None
            try:
                try:
                    model_dir, extracted = await asyncio.to_thread(self._prepare, name)
                except OSError as exc:
                    raise ModelLoadFailedError(f"cannot read {self.source}: {exc}") from None
                await self.registry.register(name, model_dir)
            except ScorerError as exc:
                with contextlib.suppress(ScorerError):
                    await self.registry.unregister(name)
                if extracted is not None:
                    await asyncio.to_thread(shutil.rmtree, extracted, True)
                self._fail(name, exc)
                return False
            finally:
                self._loaded.set()
            self._serve(_Version(name, model_dir, extracted))
            return True

    def _prepare(self, name: str) -> tuple[Path, Path | None]:
        """The version's model directory, and its own extraction (archives) to remove."""
        if not self.is_archive:
            return self.source, None
        dest = self.versions_dir / name
        if dest.exists():
            shutil.rmtree(dest)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        try:
            safe_extract(self.source, dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest, dest

    def _serve(self, version: _Version) -> None:
        old, self._current, self._failure = self._current, version, None
        logger.info("%s serves the model in %s", version.name, self.source)
        if old is not None:
            self._retire(old)

    def _fail(self, name: str, error: ScorerError) -> None:
        old, self._current = self._current, None
        kind = type(error) if isinstance(error, _KEPT_ERRORS) else ModelLoadFailedError
        message = f"the model in {self.source} failed to load: {error.message}"
        self._failure = (kind, message)
        logger.warning("%s: %s; fix it and save: it loads again", name, message)
        if old is not None:
            self._retire(old)

    # ------------------------------------------------------------------ unloading

    def _retire(self, version: _Version) -> None:
        task = asyncio.get_running_loop().create_task(self._unload_when_idle(version))
        self._retiring[version.name] = (version, task)

        def _done(_task: asyncio.Task[None]) -> None:
            self._retiring.pop(version.name, None)

        task.add_done_callback(_done)

    async def _unload_when_idle(self, version: _Version) -> None:
        while version.in_flight > 0 and not self._closed:
            version.idle.clear()
            await version.idle.wait()
        try:
            await self.registry.unregister(version.name)
        except ScorerError as exc:
            logger.warning("could not unload %s: %s", version.name, exc.message)
        finally:
            if version.extracted is not None:
                await asyncio.to_thread(shutil.rmtree, version.extracted, True)
        logger.info("%s unloaded", version.name)

    # ------------------------------------------------------------------ requests

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[str]:
        """``async with versions.use() as name:`` the version to invoke, held meanwhile.

        Raises:
            ModelNotReadyError: the first load takes longer than the wait budget.
            ModelLoadFailedError: the latest version failed to load (its reason), also
                ``InsufficientMemoryError`` or ``ModelServerUnavailableError``.
        """
        if not self._loaded.is_set():
            try:
                await asyncio.wait_for(self._loaded.wait(), self.load_wait_s)
            except TimeoutError:
                raise ModelNotReadyError(
                    f"the model in {self.source} is still loading after {self.load_wait_s:g} "
                    "s; retry the request later"
                ) from None
        version = self._current
        if version is None:
            kind, message = self._failure or (ModelLoadFailedError, "the model is not loaded")
            raise kind(message)
        version.in_flight += 1
        try:
            yield version.name
        finally:
            version.in_flight -= 1
            if version.in_flight == 0:
                version.idle.set()

    def describe(self) -> dict[str, object]:
        """What serves now, why not, and the versions still finishing requests."""
        return {
            "source": str(self.source),
            "serving": self._current.name if self._current else None,
            "failure": self._failure[1] if self._failure else None,
            "retiring": [
                {"name": version.name, "in_flight": version.in_flight}
                for version, _task in self._retiring.values()
            ],
            "in_flight": self._current.in_flight if self._current else 0,
            "loads": self._generation,
        }

    async def aclose(self) -> None:
        """Unload the versions being retired (at once) and close the registry."""
        self._closed = True
        retiring = list(self._retiring.values())
        for version, _task in retiring:
            version.idle.set()
        await asyncio.gather(*(task for _version, task in retiring), return_exceptions=True)
        await self.registry.aclose()

    async def on_change(self, paths: set[Path]) -> None:
        """A :class:`~scorer.local.watch.FileWatcher` callback: load the model again."""
        shown = ", ".join(sorted(_shown(path, self.source) for path in paths))
        logger.info("changed: %s; loading the model again", shown)
        await self.load()


class ArchiveReloader:
    """A :class:`~scorer.local.watch.FileWatcher` callback for a directory model prefix:
    archives that changed and are loaded are loaded again (the cache's :meth:`reload`)."""

    def __init__(self, cache: ModelCache, root: Path) -> None:
        self.cache = cache
        self.roots = (root.absolute(), root.resolve())

    def key(self, path: Path) -> str | None:
        """The model key (``TargetModel``) of a path under the prefix, else None."""
        for root in self.roots:
            if path.is_relative_to(root) and path != root:
                return path.relative_to(root).as_posix()
        return None

    async def __call__(self, paths: set[Path]) -> None:
        for path in sorted(paths):
            key = self.key(path)
            if key is None:
                continue
            try:
                reloaded = await self.cache.reload(key)
            except InvalidModelKeyError:
                continue
            except ScorerError as exc:
                logger.warning(
                    "%s changed and failed to load: %s; requests for it load it again "
                    "(and get this error until it is fixed)", key, exc.message,
                )  # fmt: skip
                continue
            if reloaded:
                logger.info("%s changed: its new version serves", key)


def _shown(path: Path, source: Path) -> str:
    base = source if source.is_dir() else source.parent
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)

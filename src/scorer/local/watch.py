"""Watching model files for ``scorer local --watch``, on the emulator's event loop.

:class:`FileWatcher` runs watchfiles' ``awatch`` (inotify, FSEvents or polling under the
hood) as a task of the app's lifespan and calls back with the set of changed paths. Saves
are debounced: changes are grouped until :data:`QUIET_MS` pass without another one (at
most :data:`DEBOUNCE_MS`), so an editor's save (write a temporary file, rename it over the
original, set its mode) or a tool rewriting an archive is one change. Changes that arrive
while the callback runs are delivered after it, as the next group. Python's bytecode
caches, VCS folders and editor swap and backup files are ignored (watchfiles'
``DefaultFilter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watchfiles import Change

logger = logging.getLogger("scorer.local")

DEBOUNCE_MS = 1600
"""The longest a burst of changes is grouped before it is delivered."""
QUIET_MS = 300
"""A burst ends once no change came for this long."""


class FileWatcher:
    """Calls ``on_change(paths)`` for each debounced group of changes under ``paths``."""

    def __init__(
        self,
        paths: Sequence[Path],
        on_change: Callable[[set[Path]], Awaitable[None]],
        *,
        accept: Callable[[Path], bool] | None = None,
        recursive: bool = True,
    ) -> None:
        """Args:
        paths: the directories (or files) to watch; they must exist.
        on_change: called with the changed paths of one group (its errors are logged).
        accept: which changed paths count (default: all but caches, VCS and editor files).
        recursive: watch the directories' subdirectories too.
        """
        self.paths = tuple(Path(p).absolute() for p in paths)
        self.on_change = on_change
        self.accept = accept
        self.recursive = recursive
        from watchfiles import DefaultFilter  # only when watching (~80 ms to import)

        self._default = DefaultFilter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _counts(self, change: Change, path: str) -> bool:
        return self._default(change, path) and (self.accept is None or self.accept(Path(path)))

    async def start(self) -> None:
        """Start watching (idempotent)."""
        if self._task is None:
            logging.getLogger("watchfiles").setLevel(logging.WARNING)  # ours says what changed
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="scorer-local-watch"
            )
            shown = ", ".join(str(p) for p in self.paths)
            logger.info("watching %s: a change loads the model again", shown)

    async def _run(self) -> None:
        from watchfiles import awatch

        try:
            async for changes in awatch(
                *self.paths,
                watch_filter=self._counts,
                debounce=DEBOUNCE_MS,
                step=QUIET_MS,
                stop_event=self._stop,
                recursive=self.recursive,
            ):
                changed = {Path(path) for _change, path in changes}
                try:
                    await self.on_change(changed)
                except Exception:
                    logger.exception("reloading after a change to %s failed", sorted(changed))
        except Exception:
            logger.exception("watching %s stopped", ", ".join(map(str, self.paths)))

    async def aclose(self) -> None:
        """Stop watching; a reload in progress is cancelled. Nothing keeps running."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()  # the watch thread returns within QUIET_MS
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

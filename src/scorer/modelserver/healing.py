"""Recovering a model whose worker processes all died at once (an MMS 1.1.11 defect).

MMS restarts a model's worker when the worker alone dies. When the per-model server
process dies *together with* the worker it forked (both SIGKILLed, say), MMS keeps trying
to connect to the dead socket, still lists the worker as ``READY``, and requests for that
model queue until their clients time out. Unregistering and registering the model again
(same name, same url) makes MMS start a fresh worker at once.

:class:`WorkerWatch` is polled by the process supervisor: a model MMS lists with a ready
worker but no live process on two polls in a row is registered again. (Two polls, so a
worker MMS is restarting right now is left to MMS.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from scorer.errors import ScorerError
from scorer.modelserver.client import ModelServerClient, described_workers
from scorer.modelserver.workers import served_models

logger = logging.getLogger(__name__)

READY = "READY"


def _ready_workers(description: object) -> int:
    return sum(w.get("status") == READY for w in described_workers(description) or [])


class WorkerWatch:
    """Finds models whose processes are gone while MMS thinks they serve, and re-registers them."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._suspects: set[str] = set()

    def suspects(self, models: Mapping[str, str]) -> set[str]:
        """Models with no live process now and at the previous poll."""
        alive = served_models(self.server_pid)
        missing = {name for name in models if name not in alive}
        confirmed = missing & self._suspects
        self._suspects = missing
        return confirmed

    async def heal(self, client: ModelServerClient, models: Mapping[str, str]) -> list[str]:
        """Re-register the confirmed suspects among ``models`` (name -> url); their names."""
        healed = []
        for name in sorted(self.suspects(models)):
            try:
                if _ready_workers(await client.describe(name)) == 0:
                    continue  # MMS knows the worker is down and is restarting it
                logger.error(
                    "model %s: MMS lists a ready worker but none of its processes is alive; "
                    "registering it again", name,
                )  # fmt: skip
                await client.unregister(name, timeout=30.0)
                response = await client.register(name, models[name])
            except ScorerError as exc:
                logger.error("model %s could not be registered again: %s", name, exc.message)
                continue
            logger.info("model %s registered again: %s", name, response.status_code)
            if response.status_code == 200:
                self._suspects.discard(name)
                healed.append(name)
        return healed

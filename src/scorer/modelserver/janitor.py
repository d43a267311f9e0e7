"""Unregister a model MMS left registered, without workers, after its load answered 507.

MMS 1.1.11 bug: when a worker answers a load with 507 (out of memory), MMS runs the
clean-up (``unregisterModel``) on that worker's own thread, interrupts itself, gives up
("WorkerThread interrupted during waitFor") and puts the model back in its registry with no
worker. ``GET /models`` then lists it, a retried ``POST /models`` gets 409 and invocations
find no worker: exactly the retry SageMaker makes after a 507 would fail.

The worker that answered 507 starts this module as a short-lived process. It watches the
model for a few seconds and, once MMS lists it with no worker at all, sends the
``DELETE /models/<name>`` MMS should have done. A model that is loading or serving always
has at least one worker, so a retried load that is under way is never removed.

It talks to MMS through :class:`~scorer.modelserver.client.ModelServerClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

from scorer.errors import ScorerError
from scorer.modelserver.client import ModelServerClient, worker_count


async def clean_up(base_url: str, model: str, seconds: float, interval: float = 0.1) -> str:
    """Watch ``model`` for ``seconds``; unregister it if it is listed with no worker.

    Returns what happened: ``"removed"``, ``"gone"`` (MMS removed it) or ``"serving"``.
    """
    deadline = time.monotonic() + seconds
    async with ModelServerClient(base_url) as client:
        while True:
            try:
                description = await client.describe(model)
                if description is None:
                    return "gone"
                if worker_count(description) == 0:
                    status = (await client.unregister(model, timeout=5.0)).status_code
                    if status in (200, 404):
                        return "removed"
            except ScorerError:
                pass  # not answering right now; try again until the deadline
            if time.monotonic() >= deadline:
                return "serving"
            await asyncio.sleep(interval)


def start(port: int, model: str, seconds: float = 15.0) -> None:
    """Start the clean-up for ``model`` as a detached process (returns at once)."""
    subprocess.Popen(
        [sys.executable, "-m", __name__, "--port", str(port), "--model", model,
         "--seconds", str(seconds)],
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m scorer.modelserver.janitor --port P --model NAME``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    outcome = asyncio.run(clean_up(f"http://127.0.0.1:{args.port}", args.model, args.seconds))
    print(json.dumps({"event": "load_failure_cleanup", "model": args.model,
                      "outcome": outcome}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

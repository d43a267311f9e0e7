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

Only stdlib, so it starts in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def _request(url: str, method: str = "GET") -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _workers(description: dict[str, object] | list[object]) -> list[object] | None:
    entries = description if isinstance(description, list) else [description]
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("workers"), list):
            return entry["workers"]
    return None


def clean_up(base_url: str, model: str, seconds: float, interval: float = 0.1) -> str:
    """Watch ``model`` for ``seconds``; unregister it if it is listed with no worker.

    Returns what happened: ``"removed"``, ``"gone"`` (MMS removed it) or ``"serving"``.
    """
    url = f"{base_url}/models/{urllib.parse.quote(model, safe='')}"
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, body = _request(url)
        except (OSError, ValueError):
            status, body = 0, {}
        if status == 404:
            return "gone"
        if status == 200 and _workers(body) == []:
            delete_status, _ = _request(url, method="DELETE")
            if delete_status in (200, 404):
                return "removed"
        if time.monotonic() >= deadline:
            return "serving"
        time.sleep(interval)


def start(port: int, model: str, seconds: float = 15.0) -> None:
    """Start the clean-up for ``model`` as a detached process (returns at once)."""
    subprocess.Popen(
        [sys.executable, "-m", __name__, "--port", str(port), "--model", model,
         "--seconds", str(seconds)],
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m scorer.serving.janitor --port P --model NAME``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    outcome = clean_up(f"http://127.0.0.1:{args.port}", args.model, args.seconds)
    print(json.dumps({"event": "load_failure_cleanup", "model": args.model,
                      "outcome": outcome}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why a model's last load failed, kept where ``/ping``, the emulator and the gateway look.

MMS answers a failed ``POST /models`` with a fixed "Failed to start workers" and its
``/ping`` knows nothing about a failure. The worker that failed writes one small JSON file,
``<run dir>/load-failures/<model>.json`` (``{"model", "status", "type", "message",
"public"}``); a successful load removes it. ``public`` is false when the message quotes a
user exception (it may name paths or data): the emulator and the gateway do not pass it on
to clients. The operator sees it: scorer's ``/ping`` plugin reads the record to say *why* a
single-model endpoint is not ready, and its load failure reporter answers a failed ``POST
/models`` with the record's status, type and message (the management API's caller is the
operator or the platform).

Only stdlib: the MMS plugins' contract is this file's JSON, nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SUFFIX = ".json"


def record_path(directory: Path, model: str) -> Path:
    """The record's path for ``model`` (model names are checked safe identifiers)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model) or "_"
    return directory / f"{safe}{SUFFIX}"


def record(
    directory: Path,
    model: str,
    status: int,
    message: str,
    public: bool = True,
    error_type: str = "ModelLoadError",
) -> Path:
    """Write (atomically) why ``model`` failed to load: the status a ``POST /models`` should
    answer, the error's type name, and its message."""
    directory.mkdir(parents=True, exist_ok=True)
    path = record_path(directory, model)
    body = json.dumps(
        {
            "model": model,
            "status": status,
            "type": error_type,
            "message": message[:1000],
            "public": public,
        }
    )
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(body)
    os.replace(tmp, path)
    return path


def clear(directory: Path, model: str) -> None:
    """Forget an earlier failure of ``model`` (it loaded)."""
    record_path(directory, model).unlink(missing_ok=True)


def read_since(directory: Path, model: str, since: float) -> dict[str, object] | None:
    """The failure record of ``model`` if it was written at or after ``since`` (epoch
    seconds), else None: an older record is about an earlier load."""
    try:
        if record_path(directory, model).stat().st_mtime < since:
            return None
    except OSError:
        return None
    return read(directory, model)


def read(directory: Path, model: str) -> dict[str, object] | None:
    """The failure record of ``model``, or None."""
    try:
        value = json.loads(record_path(directory, model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

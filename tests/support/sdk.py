"""The SageMaker Python SDK (v2, and v3's core) in venvs of their own, for tests that drive
the emulator with it.

sagemaker 2.x pins ``attrs<26`` and ``packaging<25``; scorer's lock has newer ones, so the SDK
cannot share ``.venv``; v3's ``sagemaker-core`` is kept apart the same way, so that neither
SDK's pins ever touch scorer's lock. :func:`sdk_python` builds ``.venv-sdk-<version>`` from
``requirements/sdk-<version>.txt`` (the SDK's own resolved set, pinned) once, reused while that
file is unchanged, and returns its interpreter; the tests run a client program
(:data:`CLIENTS`) with it, as a user's program would run against the emulator.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENTS = {
    "v2": Path(__file__).with_name("sdk_v2_async.py"),
    "v3": Path(__file__).with_name("sdk_v3_async.py"),
}
"""The async client program written with each SDK."""
PREFIX = "sdk-client: "  # the clients' own output lines (their PREFIX)


def sdk_python(version: str) -> Path:
    """The interpreter of a venv with the pinned SageMaker SDK ``version`` (``v2`` or ``v3``),
    built on first use."""
    requirements = REPO / "requirements" / f"sdk-{version}.txt"
    root = REPO / f".venv-sdk-{version}"
    python = root / "bin" / "python"
    stamp = root / ".stamp"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    venv.EnvBuilder(clear=True, with_pip=True).create(root)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(requirements)],
        check=True, timeout=600, stdout=sys.stderr,
    )  # fmt: skip
    stamp.write_text(want)
    return python

"""The SageMaker Python SDK v2 in a venv of its own, for tests that drive the emulator with it.

sagemaker 2.x pins ``attrs<26`` and ``packaging<25``; scorer's lock has newer ones, so the SDK
cannot share ``.venv``. :func:`sdk_v2_python` builds ``.venv-sdk-v2`` from
``requirements/sdk-v2.txt`` (the SDK's own resolved set, pinned) once, reused while that file
is unchanged, and returns its interpreter; the tests run ``tests/support/sdk_v2_async.py``
with it, as a user's program would run against the emulator.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements" / "sdk-v2.txt"
VENV = REPO / ".venv-sdk-v2"
CLIENT = Path(__file__).with_name("sdk_v2_async.py")
PREFIX = "sdk-client: "  # the client's own output lines (sdk_v2_async.PREFIX)


def sdk_v2_python() -> Path:
    """The interpreter of a venv with the pinned SageMaker SDK v2 (built on first use)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".stamp"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    venv.EnvBuilder(clear=True, with_pip=True).create(VENV)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True, timeout=600, stdout=sys.stderr,
    )  # fmt: skip
    stamp.write_text(want)
    return python

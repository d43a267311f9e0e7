"""Small Java harnesses against MMS's own classes (no sockets): compiled and run by tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import mms
import pytest

from scorer.config import MMS_PLUGINS
from scorer.modelserver.properties import CONTAINER_DIR


def mms_jar() -> Path:
    """The installed Multi Model Server's jar."""
    return Path(mms.__file__).parent / "frontend" / "model-server.jar"


def plugins_jar() -> Path:
    """scorer's MMS plugin jar as the servers the tests start use it."""
    folder = os.environ.get(MMS_PLUGINS) or str(CONTAINER_DIR / "mms-plugins" / "build")
    return Path(folder) / "scorer-mms-plugins.jar"


def compile_harness(folder: Path, name: str, source: str) -> Path:
    """Compile ``source`` (class ``name``) against MMS's jar into ``folder``; skips the test
    without javac (``scripts/build-plugins`` skips the plugins then too)."""
    if shutil.which("javac") is None:
        pytest.skip("javac not found (scripts/build-plugins skips the plugins too)")
    java = folder / f"{name}.java"
    java.write_text(textwrap.dedent(source))
    command = ["javac", "-nowarn", "-cp", str(mms_jar()), "-d", str(folder), str(java)]
    subprocess.run(command, check=True, timeout=120)
    return folder


def run_harness(folder: Path, name: str, args: list[str], *, patched: bool) -> str:
    """Run the harness ``name`` (MMS's jar, plus scorer's plugin jar when ``patched``);
    its stdout. Fails the test if it exits non-zero."""
    jars = [str(folder), str(mms_jar())] + ([str(plugins_jar())] if patched else [])
    run = subprocess.run(
        ["java", "-cp", os.pathsep.join(jars), name, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout

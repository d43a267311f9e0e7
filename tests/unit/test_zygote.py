"""scorer.modelserver.zygote: the launcher protocol, fd passing, exit codes and the fallback.

A real zygote process (its "MMS" child is a sleeping stand-in) forks a real script.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorer.modelserver.zygote import write_launcher

SCRIPT = """
import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("ZYGOTE_TEST"))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def zygote_address() -> Iterator[str]:
    address = f"scorer-zygote-test-{secrets.token_hex(6)}"
    stand_in = [sys.executable, "-c", "import time; time.sleep(600)"]
    zygote = subprocess.Popen(
        [sys.executable, "-m", "scorer.modelserver.zygote", "--address", address, "--", *stand_in]
    )
    yield address
    for child in _children(zygote.pid):
        subprocess.run(["kill", "-9", str(child)], check=False)
    zygote.kill()
    zygote.wait()


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_the_launcher_runs_the_script_in_a_forked_worker(
    zygote_address: str, tmp_path: Path
) -> None:
    launcher = write_launcher(tmp_path / "bin" / "python", sys.executable, zygote_address)
    assert launcher.stat().st_mode & 0o111
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [str(launcher), str(script), "3", "--model-name", "m"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"ZYGOTE_TEST": "yes", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"argv ['3', '--model-name', 'm'] cwd {tmp_path} env yes"
    assert "to stderr" in done.stderr


def test_the_launcher_falls_back_to_python_without_a_zygote(tmp_path: Path) -> None:
    launcher = write_launcher(tmp_path / "python", sys.executable, "scorer-zygote-nobody")
    done = subprocess.run(
        [str(launcher), "-c", "import sys; print(sys.argv[1:]); sys.exit(5)", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 5 and done.stdout.strip() == "['x']"

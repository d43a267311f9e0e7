"""Per-model ``code/requirements.txt``: installed when the model loads, in multi-model mode too.

Each distinct file (by sha256) is installed once with ``pip install --target`` into its
own folder under the packages dir, never into the shared environment, so two models with
conflicting pins both work: each model's worker process puts only its own folder first on
``sys.path``. Concurrent workers installing the same file wait on a file lock; the folder
appears atomically (installed into a temp sibling, then renamed).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from scorer.errors import ModelLoadError

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"
PIP_TIMEOUT_SECONDS = 600


def requirements_digest(path: Path) -> str:
    """sha256 of a requirements file, the key of its install folder."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_requirements(
    code_dir: Path, packages_dir: Path, pip_args: Sequence[str] = ()
) -> Path | None:
    """Install ``code_dir/requirements.txt`` (if any) and return its site folder.

    Raises:
        ModelLoadError: pip failed; the message carries pip's last lines of output.
    """
    requirements = code_dir / REQUIREMENTS_FILE
    if not requirements.is_file():
        return None
    digest = requirements_digest(requirements)
    target = packages_dir / digest
    if target.is_dir():
        return target
    packages_dir.mkdir(parents=True, exist_ok=True)
    with open(packages_dir / f".{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():  # another worker finished it while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=packages_dir))
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
            "--disable-pip-version-check", "--no-warn-script-location",
            "--target", str(staging), "-r", str(requirements), *pip_args,
        ]  # fmt: skip
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise ModelLoadError(
                f"installing code/{REQUIREMENTS_FILE} took over {PIP_TIMEOUT_SECONDS}s"
            ) from None
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise ModelLoadError(f"installing code/{REQUIREMENTS_FILE} failed: {tail}")
        staging.rename(target)
        logger.info(
            "installed code/%s into %s in %.1fs",
            REQUIREMENTS_FILE, target, time.monotonic() - started,
        )  # fmt: skip
    return target


def activate(site_dir: Path | None) -> None:
    """Put a model's package folder first on ``sys.path`` (this worker process only)."""
    if site_dir is not None and str(site_dir) not in sys.path:
        sys.path.insert(0, str(site_dir))

"""Shared set-up for the CDK app's tests: its package importable, its entry point, archives."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))


def write_archive(path: Path, payload: bytes) -> Path:
    """Write a tiny but real model.tar.gz holding one file."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="session")
def cdk_app_module() -> ModuleType:
    """infra/app.py, loaded under a name that cannot clash with other test packages."""
    spec = importlib.util.spec_from_file_location("scorer_cdk_app", INFRA_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def archives_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of two fake model archives, as ``model_archives_dir`` takes it."""
    directory = tmp_path_factory.mktemp("archives")
    write_archive(directory / "creative-v1.tar.gz", b'{"version": 1}')
    write_archive(directory / "creative-v2.tar.gz", b'{"version": 2}')
    return directory


@pytest.fixture(scope="session")
def archive_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fake model archive, as ``model_archive_file`` takes it."""
    return write_archive(tmp_path_factory.mktemp("archive") / "creative.tar.gz", b"{}")

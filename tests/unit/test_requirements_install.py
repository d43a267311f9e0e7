"""scorer.serving.requirements: per-model installs keyed by the file's sha256, offline."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorer.errors import ModelLoadError
from scorer.serving import requirements
from scorer.serving.requirements import activate, install_requirements, requirements_digest

OFFLINE = ("--no-index",)
NO_PIP = ("--an-option-pip-would-reject",)  # proves pip was not run at all


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    saved = list(sys.path)
    yield
    sys.path[:] = saved


def code_dir(root: Path, content: str) -> Path:
    code = root / "code"
    code.mkdir(parents=True)
    (code / requirements.REQUIREMENTS_FILE).write_text(content)
    return code


def wheel(root: Path, version: str) -> Path:
    """A minimal pure-Python wheel of ``scorer-probe`` (module ``scorer_probe``)."""
    path = root / f"scorer_probe-{version}-py3-none-any.whl"
    info = f"scorer_probe-{version}.dist-info"
    files = {
        "scorer_probe/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: scorer-probe\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(name, text)
    return path


def leftovers(packages: Path) -> list[str]:
    return sorted(p.name for p in packages.iterdir() if not p.name.endswith(".lock"))


def test_no_requirements_file_means_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    assert install_requirements(tmp_path / "code", tmp_path / "packages", NO_PIP) is None
    assert install_requirements(tmp_path / "absent", tmp_path / "packages", NO_PIP) is None
    assert not (tmp_path / "packages").exists()


def test_digest_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    code = code_dir(tmp_path, "numpy==1.0\n")
    path = code / "requirements.txt"
    assert requirements_digest(path) == hashlib.sha256(b"numpy==1.0\n").hexdigest()
    path.write_text("numpy==2.0\n")
    assert requirements_digest(path) == hashlib.sha256(b"numpy==2.0\n").hexdigest()


def test_an_existing_install_for_the_same_file_is_reused(tmp_path: Path) -> None:
    code = code_dir(tmp_path, "anything==1.0\n")
    packages = tmp_path / "packages"
    target = packages / requirements_digest(code / "requirements.txt")
    target.mkdir(parents=True)
    assert install_requirements(code, packages, NO_PIP) == target


def test_invalid_requirement_is_a_load_error_with_pips_message(tmp_path: Path) -> None:
    code = code_dir(tmp_path, "this is not a requirement ===\n")
    packages = tmp_path / "packages"
    with pytest.raises(ModelLoadError) as info:
        install_requirements(code, packages, OFFLINE)
    message = info.value.message
    assert message.startswith("installing code/requirements.txt failed: ")
    assert "Invalid requirement" in message
    assert "this is not a requirement ===" in message
    assert "\n" not in message
    assert leftovers(packages) == []  # no staging folder, no half-installed target


def test_install_goes_into_the_digest_folder_and_is_cached(tmp_path: Path) -> None:
    # one real (offline) pip run; a different file would get a different folder, so two
    # models with conflicting pins never share one (the integration suite installs two)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    packages = tmp_path / "packages"
    code = code_dir(tmp_path / "model", f"{wheel(wheels, '1.0')}\n")
    site = install_requirements(code, packages, OFFLINE)
    assert site == packages / requirements_digest(code / "requirements.txt")
    assert (site / "scorer_probe" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert leftovers(packages) == [site.name]  # the staging folder was renamed, not left
    assert install_requirements(code, packages, NO_PIP) == site  # cached: pip not run again
    with pytest.raises(ImportError):  # nothing went into the shared environment
        __import__("scorer_probe")
    activate(site)
    assert __import__("scorer_probe").VERSION == "1.0"
    del sys.modules["scorer_probe"]


def test_activate_puts_the_folder_first_once(tmp_path: Path) -> None:
    activate(None)
    before = list(sys.path)
    assert sys.path == before
    activate(tmp_path)
    activate(tmp_path)
    assert sys.path[0] == str(tmp_path)
    assert sys.path.count(str(tmp_path)) == 1
    assert sys.path[1:] == before

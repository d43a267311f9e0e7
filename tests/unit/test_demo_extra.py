"""The demo's dependencies are an optional extra (``scorer[demo]``): only ``scorer demo`` needs
them, and without them it says how to install them instead of failing with a traceback.

``scorer.models`` holds only what defines a model: it imports nothing from the layers above it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scorer.demo import INSTALL_HINT

SRC = Path(__file__).parents[2] / "src" / "scorer"
TIMEOUT = 300  # each subprocess imports torch; the CI machine has 2 busy cores


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.mark.parametrize(
    "module", ["scorer.cli", "scorer.models", "scorer.models.loading", "scorer.validate"]
)
def test_importing_does_not_load_scipy(module: str) -> None:
    result = _python(f"import sys, {module}; print('scipy' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_no_module_outside_scorer_demo_loads_scipy() -> None:
    code = """
import importlib, json, pkgutil, sys
import scorer
first = None
names = sorted(m.name for m in pkgutil.walk_packages(scorer.__path__, "scorer.")
               if not (m.name + ".").startswith("scorer.demo."))
for name in names:
    importlib.import_module(name)
    if first is None and "scipy" in sys.modules:
        first = name
print(json.dumps({"modules": len(names), "scipy_loaded": "scipy" in sys.modules, "first": first}))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] > 10
    assert report["scipy_loaded"] is False, report


def test_demo_without_scipy_says_how_to_install_it(tmp_path: Path) -> None:
    # If the check were missing, training would start; a file where the models directory
    # belongs makes that fail at once instead of training and serving.
    workdir = tmp_path / "var"
    workdir.mkdir()
    (workdir / "models").write_text("not a directory")
    code = (
        "import sys; sys.modules['scipy'] = None; from scorer.cli import main; "
        f"sys.exit(main(['demo', '--workdir', {str(workdir)!r}]))"
    )
    result = _python(code)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert INSTALL_HINT in result.stderr, output
    assert "pip install 'scorer[demo]'" in result.stderr
    assert "Traceback" not in output
    assert len(result.stderr.strip().splitlines()) == 1, output
    assert not (workdir / "run").exists()


def test_the_training_module_names_the_extra_when_scipy_is_missing() -> None:
    code = """
import sys
sys.modules["scipy"] = None
try:
    import scorer.demo.training
except ModuleNotFoundError as exc:
    print(exc.name, "|", exc)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    name, _, message = result.stdout.strip().partition(" | ")
    assert name == "scipy"
    assert INSTALL_HINT in message


# scorer.models sits at the bottom, beside scorer.errors: the model cache, the inference chain,
# the servers, the local emulator, the demo and the validator all build on it, never the
# reverse (scorer.inference, scorer.serving, scorer.modelserver, scorer.local, scorer.cache,
# scorer.demo, scorer.validate, ...).
ALLOWED = ("scorer.errors", "scorer.models")


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement in ``path`` names, at any depth (lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the scorer.models package
                base = "scorer.models" if node.level == 1 else "scorer"
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_models_imports_nothing_from_the_layers_above() -> None:
    files = sorted((SRC / "models").glob("*.py"))
    assert files
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in _imported_modules(path)
        if name.startswith("scorer.")
        and not any(name == base or name.startswith(base + ".") for base in ALLOWED)
    }
    assert not offending, sorted(offending)

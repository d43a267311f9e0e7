"""The layering rules of docs/architecture.md, checked from the source's imports.

Every ``import`` and ``from ... import`` in ``src/scorer`` counts, also those inside
functions and under ``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorer import config

SRC = Path(__file__).resolve().parents[2] / "src" / "scorer"
INFRA = Path(__file__).resolve().parents[2] / "infra"
ENV_NAME = re.compile(r"^(SCORER|SAGEMAKER)_[A-Z0-9_]+$")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> set[str]:
    """The scorer modules (and third-party top-level packages) ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {module: _imports(module, path) for module, path in _modules()}


def _layer(module: str) -> str:
    """``scorer.cache.cache`` -> ``cache``; top-level modules are their own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "scorer"


def _imported_layers(layer: str) -> set[str]:
    layers: set[str] = set()
    for module, imports in IMPORTS.items():
        if _layer(module) != layer:
            continue
        for name in imports:
            if name == "scorer" or name.startswith("scorer."):
                target = _layer(name)
                if target != layer and f"scorer.{target}" in IMPORTS | {"scorer": set()}:
                    layers.add(target)
    return layers


def _third_party(layer: str) -> set[str]:
    return {
        name.split(".")[0]
        for module, imports in IMPORTS.items()
        if _layer(module) == layer
        for name in imports
        if not name.startswith("scorer")
    }


FORBIDDEN = {
    "inference": {
        "serving", "local", "modelserver", "cache", "frontend", "demo", "validate", "metrics"
    },
    "models": {
        "inference", "serving", "local", "cache", "modelserver", "frontend", "demo", "validate",
        "metrics",
    },
    "metrics": {"inference", "models", "cache", "modelserver", "serving", "local", "frontend"},
    "cache": {"serving", "local", "frontend", "modelserver"},
    "modelserver": {"serving", "local", "frontend", "cache", "demo", "validate"},
    "frontend": {"serving", "local"},
    "serving": {"local"},
    "local": {"serving"},
    "config": {"inference", "models", "cache", "modelserver", "serving", "local", "frontend"},
    "errors": {"config", "inference", "models", "cache", "modelserver", "serving", "local"},
    "events": {
        "config", "inference", "models", "cache", "modelserver", "serving", "local",
        "frontend", "metrics",
    },
}  # fmt: skip


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    assert _imported_layers(layer) & FORBIDDEN[layer] == set()


def test_the_cache_imports_no_http_client_and_no_process_tools() -> None:
    assert _third_party("cache") & {"httpx", "psutil", "starlette", "uvicorn", "torch"} == set()


def test_no_import_cycle_between_layers() -> None:
    layers = {_layer(module) for module in IMPORTS}
    graph = {layer: _imported_layers(layer) & layers for layer in layers}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cyclic = sorted(layer for layer in layers if reaches(layer, layer, {layer}))
    assert cyclic == []


def test_the_rules_see_real_imports() -> None:
    """The checker itself: known edges are found (so an empty result above means something)."""
    assert "cache" in _imported_layers("local")
    assert "modelserver" in _imported_layers("serving")
    assert "models" in _imported_layers("inference")


def test_importing_any_local_module_imports_no_torch() -> None:
    local = [module for module in IMPORTS if _layer(module) in {"local", "frontend"}]
    assert "scorer.local.runner" in local
    code = (
        "import importlib, sys\n"
        f"for name in {local!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _env_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if ENV_NAME.match(node.value)
    }


def test_every_environment_variable_name_is_spelled_in_config_only() -> None:
    elsewhere = {
        f"{module}: {name}"
        for module, path in _modules()
        if module != "scorer.config"
        for name in _env_names(path)
    }
    assert elsewhere == set()
    assert len(_env_names(SRC / "config.py")) > 40


def test_the_cdk_app_sets_only_names_scorer_reads() -> None:
    ours = _env_names(SRC / "config.py")
    cdk = _env_names(INFRA / "scorer_infra" / "container_env.py")
    assert cdk, "the CDK app's container environment names were not found"
    assert cdk - ours == set()
    assert config.MODEL_PREFIX in cdk and config.DEFAULT_MODEL in cdk

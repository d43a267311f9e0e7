"""``scorer local --watch`` / ``SCORER_LOCAL_WATCH``: where hot reload applies, and the file
watcher's debounce and filter on real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scorer.errors import ConfigError
from scorer.local.runner import overrides_from_options
from scorer.local.settings import load_local_settings
from scorer.local.watch import FileWatcher

pytestmark = pytest.mark.timeout(60)


def test_the_flag_or_the_variable_turns_it_on(tmp_path: Path) -> None:
    prefix = {"SCORER_MODEL_PREFIX": str(tmp_path)}
    assert load_local_settings(prefix).watch is False
    assert load_local_settings({**prefix, "SCORER_LOCAL_WATCH": "true"}).watch is True
    assert load_local_settings(prefix, overrides_from_options({"watch": True})).watch is True
    # an absent flag (click's False) leaves the variable's value
    on = {**prefix, "SCORER_LOCAL_WATCH": "1"}
    assert load_local_settings(on, overrides_from_options({"watch": False})).watch is True


def test_a_bad_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SCORER_LOCAL_WATCH"):
        load_local_settings({"SCORER_MODEL_PREFIX": str(tmp_path), "SCORER_LOCAL_WATCH": "maybe"})


def test_an_s3_prefix_cannot_be_watched() -> None:
    with pytest.raises(ConfigError, match="local model prefix"):
        load_local_settings(
            {"SCORER_MODEL_PREFIX": "s3://models/prefix/", "SCORER_LOCAL_WATCH": "true"}
        )


def test_a_single_model_on_an_external_model_server_cannot_be_watched(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-server-url"):
        load_local_settings(
            {"SCORER_LOCAL_MODEL_SERVER_URL": "http://model-server:8080"},
            {"model_dir": tmp_path, "watch": True},
        )


def test_editor_files_and_bytecode_caches_are_not_changes(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    script = code / "inference.py"
    script.write_text("v = 0\n")
    groups: list[set[str]] = []

    async def main() -> None:
        changed = asyncio.Event()

        async def on_change(paths: set[Path]) -> None:
            groups.append({path.relative_to(tmp_path).as_posix() for path in paths})
            changed.set()

        watcher = FileWatcher([tmp_path], on_change)
        await watcher.start()
        try:
            await asyncio.sleep(0.3)  # the task starts watching
            (code / ".inference.py.swp").write_text("swap")
            (code / "inference.py~").write_text("backup")
            (code / "__pycache__").mkdir()
            (code / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"\0")
            for version in range(1, 4):
                script.write_text(f"v = {version}\n")
            await asyncio.wait_for(changed.wait(), 30)
        finally:
            await watcher.aclose()

    asyncio.run(main())
    assert groups == [{"code/inference.py"}]
    assert script.read_text() == "v = 3\n"

"""scorer.modelserver.load_failures: the per-model record /ping and the clean-up read."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from scorer.modelserver import load_failures
from scorer.modelserver.registry import _answered_reason


def test_record_read_and_clear(tmp_path: Path) -> None:
    directory = tmp_path / "load-failures"
    path = load_failures.record(directory, "market-de", 507, "out of memory loading market-de")
    assert path == directory / "market-de.json"
    assert json.loads(path.read_text()) == {
        "model": "market-de", "status": 507, "type": "ModelLoadError",
        "message": "out of memory loading market-de", "public": True,
    }  # fmt: skip
    assert load_failures.read(directory, "market-de")["status"] == 507  # type: ignore[index]
    load_failures.clear(directory, "market-de")
    assert load_failures.read(directory, "market-de") is None
    load_failures.clear(directory, "market-de")  # clearing twice is fine
    assert [p.name for p in directory.iterdir()] == []  # no temp files left


def test_unsafe_names_stay_inside_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "load-failures"
    path = load_failures.record(directory, "../../etc/passwd", 400, "unsafe")
    assert path.parent == directory and path.name == ".._.._etc_passwd.json"
    assert not (tmp_path / "etc").exists()


def test_long_messages_are_cut_and_garbage_reads_as_none(tmp_path: Path) -> None:
    load_failures.record(tmp_path, "m", 500, "x" * 5000)
    assert len(str(load_failures.read(tmp_path, "m")["message"])) == 1000  # type: ignore[index]
    (tmp_path / "bad.json").write_text("{not json")
    assert load_failures.read(tmp_path, "bad") is None


def _answer(status: int, body: dict[str, object]) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_a_remote_load_failure_quotes_the_model_server_except_the_models_own_exception() -> None:
    """Without the worker's record (a model server on another host, the compose stack), the
    emulator relies on MMS's answer; a 500 from scorer's load failure reporter quotes the
    model's own exception, which clients must not see: only its type."""
    own = {"code": 500, "type": "RuntimeError", "message": "RuntimeError: secret path /x"}
    assert (
        _answered_reason(_answer(500, own)) == "the model's code raised RuntimeError while loading"
    )
    mms = {"code": 500, "type": "InternalServerException", "message": "Failed to start workers"}
    assert _answered_reason(_answer(500, mms)) == "Failed to start workers"
    bad = {"code": 400, "type": "InvalidLoadRequestError", "message": "url outside the root"}
    assert _answered_reason(_answer(400, bad)) == "url outside the root"

"""scorer local at start-up: the wait for an external model server (``--model-server-url``,
compose) says what it waits for and gives up with what it last saw; the invoke snippet it
prints names an archive that loads."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scorer.cache import CacheSettings
from scorer.errors import ModelServerUnavailableError
from scorer.local.runner import LocalEndpoint, _wait_for_ping
from scorer.local.settings import LocalSettings


class _Loading(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "Unhealthy", "message": "model m is loading"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loading_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Loading)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_host_that_does_not_resolve_is_named(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://model-server.invalid:8080"
    with caplog.at_level(logging.INFO), pytest.raises(ModelServerUnavailableError) as info:
        _wait_for_ping(url, timeout=1.5, report_every=0.5)
    assert url in info.value.message and "cannot be reached" in info.value.message
    assert "within 1.5 s" in info.value.message
    progress = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert progress and all(url in line and "cannot be reached" in line for line in progress)


def test_a_server_that_is_not_ready_is_quoted(loading_server: str) -> None:
    with pytest.raises(ModelServerUnavailableError) as info:
        _wait_for_ping(loading_server, timeout=1.0, report_every=0.5)
    assert "last: /ping answered 503: model m is loading" in info.value.message


def _archive(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_the_invoke_snippet_names_an_archive_that_loads(tmp_path: Path) -> None:
    """Not the alphabetically first: one that passes the archive checks, preferring one
    scorer's default chain serves (no user code that may fail to load)."""
    weights = {"spec.json": b"{}", "model.safetensors": b"x" * 64}
    _archive(tmp_path / "a-broken.tar.gz", {**weights, "code/inference.py": b"raise x"})
    (tmp_path / "b-corrupt.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    _archive(tmp_path / "c-creative.tar.gz", weights)
    settings = LocalSettings(cache=CacheSettings(model_prefix=str(tmp_path)))
    assert LocalEndpoint(settings, {}).example_model() == "c-creative.tar.gz"
    (tmp_path / "c-creative.tar.gz").unlink()  # only user code left: it still passes checks
    assert LocalEndpoint(settings, {}).example_model() == "a-broken.tar.gz"

"""scorer local's wait for an external model server (``--model-server-url``, compose) says
what it waits for and gives up with what it last saw."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scorer.errors import ModelServerUnavailableError
from scorer.local.runner import _wait_for_ping


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

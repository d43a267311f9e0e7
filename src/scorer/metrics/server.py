"""The supervisor's metrics server: the workers' summed metrics on a loopback port.

In the MMS modes (``scorer serve``) MMS owns the public port, so its ``/metrics`` is an
endpoint plugin (``container/mms-plugins``, ``ai.scorer.mms.Metrics``) that fetches the
text from this server, whose URL the supervisor writes into the MMS properties
(``scorer_metrics_url``). The work of merging the files happens here, in Python.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import start_http_server

from scorer.metrics.exposition import registry_of
from scorer.metrics.multiprocess import WorkerFilesCollector

LOOPBACK = "127.0.0.1"


class MetricsServer:
    """An HTTP server on ``127.0.0.1:port`` (0: any free port) answering with the sum of
    the worker metrics in ``directory``; it runs in a daemon thread until :meth:`close`."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        registry = registry_of(WorkerFilesCollector(directory))
        self._httpd, self._thread = start_http_server(port, LOOPBACK, registry)
        self.port = int(self._httpd.server_port)
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """Where the metrics are served."""
        return f"http://{LOOPBACK}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

"""Model workers forked from scorer's zygote, against the real Multi Model Server.

The zygote (``SCORER_WORKER_ZYGOTE``, on by default) is the process scorer starts; MMS is its
child and runs the zygote's launcher as "python", so each model's worker is forked from a
process that already imported torch and scorer. These tests check the process tree, that an
unloaded model's worker goes away, that the server still works when the zygote is off or
cannot be reached, and no timings.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from scorer.modelserver.process import ModelServer
from scorer.modelserver.workers import worker_processes
from tests.support.models import creative_model_dir, image_bytes
from tests.support.servers import load, running_server
from tests.support.waiting import until_answered

pytestmark = pytest.mark.integration


def _workers(server: ModelServer, name: str) -> list[psutil.Process]:
    """The model's processes under the server, as the cache's memory meter finds them."""
    assert server.process is not None
    return worker_processes(server.process.pid, name)


def _scores(
    client: httpx.Client, name: str, timeout: float | None = None
) -> httpx.Response:
    """A JPEG scored by ``name``; ``timeout``: this request's own (None: the client's)."""
    return client.post(
        f"/models/{name}/invoke",
        content=image_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name in ("z1", "z2", "z3"):
        creative_model_dir(root, name)
    return root


@pytest.fixture(scope="module")
def server(
    models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModelServer, httpx.Client]]:
    extra = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(models)}
    with running_server(tmp_path_factory.mktemp("run"), extra) as started:
        assert isinstance(started, ModelServer)
        with httpx.Client(base_url=started.url, timeout=120) as client:
            yield started, client


def test_workers_are_forked_from_the_zygote(
    server: tuple[ModelServer, httpx.Client], models: Path
) -> None:
    model_server, client = server
    assert model_server.process is not None
    assert "scorer.modelserver.zygote" in model_server.process.args  # type: ignore[operator]
    assert load(client, "z1", models / "z1" / "model").status_code == 200
    assert _scores(client, "z1").status_code == 200
    workers = _workers(model_server, "z1")
    assert workers, "no worker process names model z1"
    parents = {w.ppid() for w in workers}
    assert model_server.process.pid in parents  # the zygote, not the JVM, is the parent


def test_an_unloaded_models_worker_goes_away(
    server: tuple[ModelServer, httpx.Client], models: Path
) -> None:
    model_server, client = server
    assert load(client, "z2", models / "z2" / "model").status_code == 200
    assert _workers(model_server, "z2")
    assert client.delete("/models/z2").status_code == 200
    deadline = time.monotonic() + 20
    while _workers(model_server, "z2") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _workers(model_server, "z2")
    assert load(client, "z2", models / "z2" / "model").status_code == 200
    assert _scores(client, "z2").json()["model"] == "z2"


def test_a_killed_forked_worker_is_restarted(
    server: tuple[ModelServer, httpx.Client], models: Path
) -> None:
    model_server, client = server
    assert load(client, "z3", models / "z3" / "model").status_code == 200
    # The process serving requests is the one the per-model server (the zygote's child)
    # forks per connection: the biggest, what an OOM killer picks. (MMS 1.1.11 never
    # recovers when the per-model server dies with it, zygote or not.)
    workers = _workers(model_server, "z3")
    forked = {w.pid for w in workers if w.ppid() == model_server.process.pid}  # type: ignore[union-attr]
    serving = [w for w in workers if w.ppid() in forked]
    assert serving
    for worker in serving:
        os.kill(worker.pid, signal.SIGKILL)
    statuses, _ = until_answered(lambda timeout: _scores(client, "z3", timeout), 60)
    assert statuses[-1] == 200, statuses
    assert _scores(client, "z1").status_code == 200  # the neighbour never noticed


def test_without_the_zygote_workers_start_as_mms_starts_them(models: Path, tmp_path: Path) -> None:
    extra = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SCORER_MODELS_ROOT": str(models),
        "SCORER_WORKER_ZYGOTE": "false",
    }
    with (
        running_server(tmp_path / "run", extra) as started,
        httpx.Client(base_url=started.url, timeout=120) as client,
    ):
        assert isinstance(started, ModelServer) and started.process is not None
        assert "--address" not in started.process.args  # type: ignore[operator]  # no fork server
        assert load(client, "z1", models / "z1" / "model").status_code == 200
        assert _scores(client, "z1").status_code == 200

"""Cross-request batching on the real MMS: a model registered as SageMaker does, with only
{"model_name", "url"}, and a single-model endpoint's startup model serve concurrent requests
in shared forward passes (seen in the worker's log lines, not by timing), each answered
exactly as it would be alone."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scorer.modelserver.process import ModelServer
from tests.support.models import creative_model_dir, image_bytes
from tests.support.servers import load, running_server

pytestmark = pytest.mark.integration

CONCURRENT = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelServer, Path]]:
    models = tmp_path_factory.mktemp("models")
    creative_model_dir(models, "batched")
    extra = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SCORER_MODELS_ROOT": str(models),
        "SCORER_MAX_BATCH_SIZE": "8",
        # long enough for concurrent requests to meet in one batch on a busy 2-core machine
        "SCORER_MAX_BATCH_DELAY_MS": "300",
    }
    with running_server(tmp_path_factory.mktemp("run"), extra) as running:
        if not isinstance(running, ModelServer):
            pytest.skip("needs a server this test starts (it reads the server's log)")
        yield running, models


def _forwards(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        start = line.find('{"batch_images"')
        if start >= 0 and '"event": "forward"' in line:
            found.append(json.loads(line[start:]))
    return found


def _concurrent_requests_share_a_forward(running: ModelServer, path: str, model: str) -> None:
    """Each request alone, then all at once: the same scores, and fewer forwards."""
    bodies = [image_bytes(seed=i) for i in range(CONCURRENT)]
    with httpx.Client(base_url=running.url, timeout=120) as client:
        alone = [
            client.post(path, content=body, headers={"Content-Type": "image/jpeg"}).json()
            for body in bodies
        ]
    answers: list[tuple[int, httpx.Response]] = []

    def invoke(index: int) -> None:
        response = httpx.post(
            f"{running.url}{path}",
            content=bodies[index],
            headers={"Content-Type": "image/jpeg"},
            timeout=120,
        )
        answers.append((index, response))

    log = running.config.log_dir / "mms_log.log"
    before = len(_forwards(log))
    threads = [threading.Thread(target=invoke, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(i for i, _ in answers) == list(range(CONCURRENT))
    for index, response in answers:
        assert response.status_code == 200, response.text
        got = response.json()["scores"][0]
        want = alone[index]["scores"][0]
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) <= 1e-4 for k in got)
    shared = [f for f in _forwards(log)[before:] if f["model"] == model]
    assert sum(int(f["batch_requests"]) for f in shared) == CONCURRENT  # type: ignore[call-overload]
    assert max(int(f["batch_requests"]) for f in shared) > 1  # type: ignore[call-overload]


def test_concurrent_requests_share_a_forward_and_get_their_own_scores(
    server: tuple[ModelServer, Path],
) -> None:
    running, models = server
    with httpx.Client(base_url=running.url, timeout=120) as client:
        assert load(client, "batched", models / "batched" / "model").status_code == 200
    _concurrent_requests_share_a_forward(running, "/models/batched/invoke", "batched")


@pytest.fixture(scope="module")
def single_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A single-model endpoint: MMS registers its model at start-up (``load_models``); the
    model's spec sets the batch delay, the server the batch size."""
    model_dir = creative_model_dir(tmp_path_factory.mktemp("model"), "solo")
    spec_file = model_dir / "spec.json"
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "batching": {"max_delay_ms": 300}}))
    extra = {
        "SAGEMAKER_MULTI_MODEL": "false",
        "SCORER_MODEL_DIR": str(model_dir),
        "SCORER_MAX_BATCH_SIZE": "8",
        "SCORER_MAX_BATCH_DELAY_MS": "5",
    }
    with running_server(tmp_path_factory.mktemp("run"), extra) as running:
        if not isinstance(running, ModelServer):
            pytest.skip("needs a server this test starts (it reads the server's log)")
        yield running


def test_a_single_model_endpoint_batches_its_startup_model(single_model: ModelServer) -> None:
    """MMS registers a startup model with batch size 1; scorer's plugin gives it the server's
    batch size and its spec's delay, and concurrent /invocations share a forward."""
    described = httpx.get(f"{single_model.url}/models/model", timeout=30)
    assert described.status_code == 200, described.text
    body = described.json()
    model = body[0] if isinstance(body, list) else body
    assert (model["batchSize"], model["maxBatchDelay"]) == (8, 300), model
    _concurrent_requests_share_a_forward(single_model, "/invocations", "model")

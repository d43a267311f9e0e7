"""Memory exhaustion is a 507, not an OOM kill, against the real Multi Model Server.

Each worker's data size is bounded (``SCORER_WORKER_MEMORY_LIMIT_MB``; ``auto`` by default on
CPU: what it has plus 90 % of the memory free when it loads). A model that keeps allocating,
at load or on a request, gets ``MemoryError`` at the bound instead of being killed by the
kernel (and taking a neighbour with it): the load or the request answers 507, and every
other model keeps serving. The allocations here are real and touched (not just reserved).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.models import add_code, creative_model_dir, image_bytes, torchscript_model_dir
from tests.support.servers import load, running_server

pytestmark = pytest.mark.integration

# Allocate and touch 128 MB blocks until memory runs out, keeping them all.
HOG = """
import json

def _exhaust():
    blocks = []
    while True:
        blocks.append(bytearray(b"x" * (128 << 20)))

def model_fn(model_dir):
    if "hog-load" in model_dir:
        _exhaust()
    return "hog"

def transform_fn(model, data, content_type, accept):
    if data == b"exhaust":
        _exhaust()
    return json.dumps({"bytes": len(data)}), "application/json"
"""

LIMIT_MB = 3000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    root = tmp_path_factory.mktemp("models")
    add_code(torchscript_model_dir(root, "hog-load"), HOG)
    add_code(torchscript_model_dir(root, "hog-request"), HOG)
    creative_model_dir(root, "neighbour")
    extra = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SCORER_MODELS_ROOT": str(root),
        "SCORER_WORKER_MEMORY_LIMIT_MB": str(LIMIT_MB),
    }
    with (
        running_server(tmp_path_factory.mktemp("run"), extra) as started,
        httpx.Client(base_url=started.url, timeout=120) as http,
    ):
        assert load(http, "neighbour", root / "neighbour" / "model").status_code == 200
        yield http, root


def _neighbour_serves(client: httpx.Client) -> bool:
    response = client.post(
        "/models/neighbour/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    return response.status_code == 200


def test_a_load_that_exhausts_memory_is_507(server: tuple[httpx.Client, Path]) -> None:
    client, root = server
    response = load(client, "hog-load", root / "hog-load" / "model")
    assert response.status_code == 507, response.text
    assert _neighbour_serves(client)


def test_a_request_that_exhausts_memory_is_507_and_the_worker_lives(
    server: tuple[httpx.Client, Path],
) -> None:
    client, root = server
    assert load(client, "hog-request", root / "hog-request" / "model").status_code == 200
    response = client.post("/models/hog-request/invoke", content=b"exhaust")
    assert response.status_code == 507, response.text
    assert response.json()["type"] == "InsufficientMemoryError"
    after = client.post("/models/hog-request/invoke", content=b"small")
    assert after.status_code == 200 and after.json() == {"bytes": 5}
    assert _neighbour_serves(client)

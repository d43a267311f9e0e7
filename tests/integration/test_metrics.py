"""``GET /metrics`` on the real Multi Model Server: per model, summed across its workers,
through the ``ai.scorer.mms.Metrics`` plugin and the supervisor's loopback server.

``entrypoint.py serve`` (multi-model) as the container runs it: two models, a known number
of invocations each (one a 4xx), then a SIGKILLed worker; the counters never go down.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scorer.config import load_config
from scorer.modelserver.properties import plugins_dir
from scorer.modelserver.workers import worker_processes
from tests.support.models import creative_model_dir, image_bytes
from tests.support.processes import serving_entrypoint
from tests.support.servers import external_url, load, running_server, server_environ
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _plugins_built() -> None:
    if external_url() is not None:
        pytest.skip("starts its own servers")
    if plugins_dir(load_config(os.environ)) is None:
        pytest.skip("the MMS plugin jar is not built (scripts/build-plugins needs javac)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, str, dict[str, Path]]]:
    """``entrypoint.py serve`` in multi-model mode with models m1 and m2 loaded."""
    models_root = tmp_path / "models"
    models = {name: creative_model_dir(models_root, name) for name in ("m1", "m2")}
    env = server_environ(
        tmp_path / "run",
        {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(models_root)},
    )
    with serving_entrypoint(env, tmp_path / "serve.log") as (process, url):
        with httpx.Client(base_url=url, timeout=180) as client:
            for name, model_dir in models.items():
                assert load(client, name, model_dir).status_code == 200
        yield process.pid, url, models


def invoke(url: str, name: str, body: bytes | None = None) -> int:
    response = httpx.post(
        f"{url}/models/{name}/invoke",
        content=image_bytes() if body is None else body,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    return response.status_code


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples: Samples) -> dict[tuple[str, str], float]:
    """``scorer_requests_total`` by (model, code)."""
    return {
        (dict(labels)["model"], dict(labels)["code"]): count
        for (name, labels), count in samples.items()
        if name == "scorer_requests_total"
    }




def serving_processes(server_pid: int, model: str) -> list[psutil.Process]:
    """The forked worker processes that load and serve ``model``: MMS's per-port listener
    forks the one that loads the model (as in test_faults.py), and that one is killed."""
    workers = worker_processes(server_pid, model)
    pids = {process.pid for process in workers}
    return [process for process in workers if process.ppid() in pids]


def test_counts_per_model_and_code_add_up_and_survive_a_killed_worker(
    served: tuple[int, str, dict[str, Path]],
) -> None:
    server_pid, url, _ = served
    for _ in range(3):
        assert invoke(url, "m1") == 200
    assert invoke(url, "m1", b"definitely not an image") == 400
    for _ in range(2):
        assert invoke(url, "m2") == 200

    before = scrape(url)
    assert requests_of(before) == {("m1", "200"): 3, ("m1", "400"): 1, ("m2", "200"): 2}
    assert value(before, "scorer_request_duration_seconds_count", model="m1") == 4
    assert value(before, "scorer_batch_size_count", model="m2") == 2
    assert value(before, "scorer_stage_duration_seconds_count", model="m1", stage="decode") == 4
    assert value(before, "scorer_stage_duration_seconds_count", model="m1", stage="forward") == 3
    assert value(before, "scorer_model_loads_total", model="m1", outcome="success") == 1
    assert value(before, "scorer_model_loads_total", model="m2", outcome="success") == 1
    assert value(before, "scorer_models_loaded", model="m1") == 1
    assert value(before, "scorer_models_loaded", model="m2") == 1
    assert value(before, "scorer_worker_resident_memory_bytes", model="m1") > 0

    victims = serving_processes(server_pid, "m1")
    assert victims, "no forked worker process of m1 found"
    for victim in victims:
        victim.kill()  # SIGKILL: the worker cannot write anything more
    wait_for(lambda: invoke(url, "m1") == 200, 120, "m1's restarted worker to serve")

    after = scrape(url)
    counts_before, counts_after = requests_of(before), requests_of(after)
    assert all(counts_after[key] >= count for key, count in counts_before.items())
    assert counts_after[("m1", "200")] >= counts_before[("m1", "200")] + 1
    assert counts_after[("m1", "400")] == 1
    assert counts_after[("m2", "200")] == 2
    assert value(after, "scorer_model_loads_total", model="m1", outcome="success") == 2
    assert value(after, "scorer_models_loaded", model="m1") == 1


def test_without_the_supervisors_metrics_server_metrics_answer_503(tmp_path: Path) -> None:
    # ModelServer.start alone (no serve_forever): nothing to fetch the sum from
    with running_server(tmp_path / "run", {"SAGEMAKER_MULTI_MODEL": "true"}) as server:
        response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 503
    assert "metrics server is not configured" in response.text


def test_a_single_model_endpoint_exports_its_model(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path / "models", "only")
    env = server_environ(tmp_path / "run", {"SCORER_MODEL_DIR": str(model_dir)})
    env.pop("SAGEMAKER_MULTI_MODEL", None)
    with serving_entrypoint(env, tmp_path / "serve.log") as (_process, url):
        response = httpx.post(
            f"{url}/invocations",
            content=image_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        samples = scrape(url)
    assert requests_of(samples) == {("model", "200"): 1}
    assert value(samples, "scorer_models_loaded", model="model") == 1

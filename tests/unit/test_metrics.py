"""scorer.metrics: the workers' metrics summed across processes, the cache's, and where
each mode serves them (the MMS handler, the supervisor's server, the front ends' route)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import mms
import pytest
import torch
from mms.context import Context
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from scorer.cache.resident import ResidentModel
from scorer.cache.stats import CacheStats
from scorer.config import PROMETHEUS_MULTIPROC_DIR, load_config
from scorer.frontend.backend import ModelServerEndpoint
from scorer.frontend.metrics import metrics_route
from scorer.metrics.cache import CacheCollector
from scorer.metrics.exposition import registry_of
from scorer.metrics.multiprocess import WorkerFilesCollector, prepare, reap_dead_workers
from scorer.metrics.server import MetricsServer
from scorer.metrics.worker import record_load
from scorer.modelserver.process import environment
from scorer.modelserver.properties import properties
from scorer.serving import handler_service
from scorer.serving.handler_service import HandlerService
from tests.support.models import creative_model_dir
from tests.unit.test_handler_service import JPEG, call, env, mms_request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# A model worker as far as metrics go: one model, some answered requests, one forward; it
# says "ready" once its numbers are written and runs until its stdin closes.
FAKE_WORKER = """
import sys
from scorer.metrics.worker import ModelMetrics, record_load

model, codes = sys.argv[1], sys.argv[2]
device_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else None  # a GPU worker's, else None
record_load(model, "success", 1.5)
metrics = ModelMetrics(model)
metrics.loaded(device_bytes)
for code in codes.split(","):
    metrics.request(int(code), 0.02)
metrics.forward(len(codes.split(",")))
print("ready", flush=True)
sys.stdin.read()
"""


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def get(app: Starlette, path: str, **headers: str) -> httpx.Response:
    """``GET path`` from ``app`` in this thread (no server, no lifespan)."""

    async def request() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(request())


def scrape(directory: Path) -> Samples:
    return parse(generate_latest(registry_of(WorkerFilesCollector(directory))).decode())


class FakeWorker:
    """A process that records metrics for ``model`` into ``directory`` and stays alive."""

    def __init__(
        self, directory: Path, model: str, codes: str, device_bytes: int | None = None
    ) -> None:
        extra = [] if device_bytes is None else [str(device_bytes)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_WORKER, model, codes, *extra],
            env={**os.environ, PROMETHEUS_MULTIPROC_DIR: str(directory)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == b"ready\n", line

    def end(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0
        assert self.process.stdout is not None
        self.process.stdout.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[FakeWorker]]]:
    directory = tmp_path / "metrics"
    prepare(directory)
    started: list[FakeWorker] = []
    try:
        yield directory, started
    finally:
        for worker in started:
            worker.kill()


# --- summing the workers' files -------------------------------------------------------------


def test_gpu_memory_per_model_sums_its_live_workers_and_is_absent_on_the_cpu(
    workers: tuple[Path, list[FakeWorker]],
) -> None:
    directory, started = workers
    first = FakeWorker(directory, "g", "200", device_bytes=1_000_000)
    second = FakeWorker(directory, "g", "200", device_bytes=2_000_000)
    cpu = FakeWorker(directory, "c", "200")
    started += [first, second, cpu]
    live = scrape(directory)
    assert value(live, "scorer_worker_device_memory_bytes", model="g") == 3_000_000
    assert value(live, "scorer_worker_device_memory_bytes", model="c") is None
    first.end()
    assert value(scrape(directory), "scorer_worker_device_memory_bytes", model="g") == 2_000_000


def test_counters_of_two_workers_add_up_and_a_dead_workers_counts_stay(
    workers: tuple[Path, list[FakeWorker]],
) -> None:
    directory, started = workers
    first = FakeWorker(directory, "a", "200,200,415")
    second = FakeWorker(directory, "a", "200,200")
    other = FakeWorker(directory, "b", "200")
    started += [first, second, other]
    live = scrape(directory)
    assert value(live, "scorer_requests_total", model="a", code="200") == 4
    assert value(live, "scorer_requests_total", model="a", code="415") == 1
    assert value(live, "scorer_requests_total", model="b", code="200") == 1
    assert value(live, "scorer_request_duration_seconds_count", model="a") == 5
    assert value(live, "scorer_batch_size_count", model="a") == 2
    assert value(live, "scorer_batch_size_sum", model="a") == 5
    assert value(live, "scorer_model_loads_total", model="a", outcome="success") == 2
    assert value(live, "scorer_model_load_duration_seconds_sum", model="a") == 3.0
    assert value(live, "scorer_models_loaded", model="a") == 1  # per model, not per worker
    assert (value(live, "scorer_worker_resident_memory_bytes", model="a") or 0) > 0

    first.end()
    second.end()
    dead = scrape(directory)
    assert value(dead, "scorer_requests_total", model="a", code="200") == 4
    assert value(dead, "scorer_requests_total", model="a", code="415") == 1
    assert value(dead, "scorer_model_loads_total", model="a", outcome="success") == 2
    # the live gauges forget the dead workers; the live worker's stay
    assert value(dead, "scorer_models_loaded", model="a") is None
    assert value(dead, "scorer_worker_resident_memory_bytes", model="a") is None
    assert value(dead, "scorer_models_loaded", model="b") == 1

    started.append(FakeWorker(directory, "a", "200"))  # a's worker, restarted
    restarted = scrape(directory)
    assert value(restarted, "scorer_requests_total", model="a", code="200") == 5
    assert value(restarted, "scorer_models_loaded", model="a") == 1


def test_a_killed_workers_counters_stay_and_its_live_gauges_go(
    workers: tuple[Path, list[FakeWorker]],
) -> None:
    directory, started = workers
    worker = FakeWorker(directory, "a", "200,503")
    started.append(worker)
    pid = worker.process.pid
    assert reap_dead_workers(directory) == []
    worker.kill()  # SIGKILL: no chance to clean up
    assert reap_dead_workers(directory) == [pid]
    assert not list(directory.glob(f"gauge_live*_{pid}.db"))
    assert list(directory.glob(f"counter_{pid}.db"))
    samples = scrape(directory)
    assert value(samples, "scorer_requests_total", model="a", code="503") == 1
    assert value(samples, "scorer_models_loaded", model="a") is None


def test_prepare_empties_a_previous_servers_files_only(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("kept")
    prepare(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    prepare(tmp_path / "new")
    assert (tmp_path / "new").is_dir()


def test_no_directory_collects_nothing(tmp_path: Path) -> None:
    assert scrape(tmp_path / "absent") == {}


# --- the cache's collector ------------------------------------------------------------------


def cache_stats(**changes: object) -> CacheStats:
    stats = CacheStats(
        hits=7,
        misses=3,
        loads=2,
        evictions=1,
        failures=4,
        resident_models=("fr.tar.gz",),
        loading=("de.tar.gz", "it.tar.gz"),
        footprint={"host_memory": 1024, "extracted": 99},
    )
    return replace(stats, **changes)  # type: ignore[arg-type]


def test_the_cache_collector_exports_the_stats() -> None:
    collector = CacheCollector(cache_stats(), {"3f2a": "fr.tar.gz"})
    samples = parse(generate_latest(registry_of(collector)).decode())
    assert value(samples, "scorer_cache_hits_total") == 7
    assert value(samples, "scorer_cache_misses_total") == 3
    assert value(samples, "scorer_cache_loads_total") == 2
    assert value(samples, "scorer_cache_evictions_total") == 1
    assert value(samples, "scorer_cache_load_failures_total") == 4
    assert value(samples, "scorer_cache_resident_models") == 1
    assert value(samples, "scorer_cache_loading_models") == 2
    assert value(samples, "scorer_cache_footprint_bytes", budget="host_memory") == 1024
    assert value(samples, "scorer_cache_model_info", model="3f2a", key="fr.tar.gz") == 1


# --- where each mode serves them ------------------------------------------------------------


class FakeCache:
    """What the front end's route reads of a model cache."""

    def __init__(self) -> None:
        self.hits = 0

    def stats(self) -> CacheStats:
        return cache_stats(hits=self.hits)

    def resident(self) -> tuple[ResidentModel, ...]:
        return (ResidentModel("fr.tar.gz", "3f2a", Path("/x"), 1, 2),)


def test_the_front_end_route_serves_the_workers_and_the_cache_at_each_scrape(
    workers: tuple[Path, list[FakeWorker]],
) -> None:
    directory, started = workers
    started.append(FakeWorker(directory, "3f2a", "200,200"))
    cache = FakeCache()
    endpoint = ModelServerEndpoint("http://127.0.0.1:1", metrics_dir=directory)
    app = Starlette(routes=[metrics_route(endpoint, cache)])  # type: ignore[arg-type]
    first = get(app, "/metrics")
    cache.hits = 5
    started.append(FakeWorker(directory, "3f2a", "400"))
    second = get(app, "/metrics")
    openmetrics = get(app, "/metrics", Accept="application/openmetrics-text")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    before, after = parse(first.text), parse(second.text)
    assert value(before, "scorer_requests_total", model="3f2a", code="200") == 2
    assert value(before, "scorer_cache_hits_total") == 0
    assert value(after, "scorer_requests_total", model="3f2a", code="400") == 1
    assert value(after, "scorer_cache_hits_total") == 5
    assert value(after, "scorer_cache_model_info", model="3f2a", key="fr.tar.gz") == 1
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_a_front_end_without_a_model_server_it_started_serves_the_cache_only() -> None:
    endpoint = ModelServerEndpoint("http://127.0.0.1:1")
    app = Starlette(routes=[metrics_route(endpoint, FakeCache())])  # type: ignore[arg-type]
    samples = parse(get(app, "/metrics").text)
    assert value(samples, "scorer_cache_misses_total") == 3
    assert not any(name.startswith("scorer_requests") for name, _ in samples)


def test_the_supervisors_server_serves_the_sum_on_loopback(
    workers: tuple[Path, list[FakeWorker]],
) -> None:
    directory, started = workers
    worker = FakeWorker(directory, "model", "200,200,200")
    started.append(worker)
    worker.end()
    server = MetricsServer(directory)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        response = httpx.get(server.url, timeout=10)
    finally:
        server.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert value(parse(response.text), "scorer_requests_total", model="model", code="200") == 3
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url, timeout=2)


def test_mms_gets_the_metrics_dir_and_the_plugin_its_url(tmp_path: Path) -> None:
    config = load_config({"SCORER_RUN_DIR": str(tmp_path / "run")})
    assert config.metrics_dir == tmp_path / "run" / "metrics"
    assert environment(config, {})[PROMETHEUS_MULTIPROC_DIR] == str(config.metrics_dir)
    assert "scorer_metrics_url" not in properties(config)
    url = "http://127.0.0.1:31000/metrics"
    assert properties(config, metrics_url=url)["scorer_metrics_url"] == url


def test_record_load_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="unknown load outcome"):
        record_load("m", "maybe")


# --- the MMS handler (in this process: no multiprocess files) -------------------------------


@pytest.fixture
def worker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A worker's configuration for loading in this process; torch's threads restored."""
    threads = torch.get_num_threads()
    yield env(tmp_path, SCORER_WORKER_MEMORY_LIMIT_MB="off")
    torch.set_num_threads(threads)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_handler_counts_times_and_logs_each_request(
    tmp_path: Path, worker_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    model = "metrics-handler"
    model_dir = creative_model_dir(tmp_path, model)
    service = HandlerService(load_config(worker_env), model, model_dir, None)
    service.initialize()
    assert sample("scorer_models_loaded", model=model) == 1
    with caplog.at_level(logging.INFO, logger="scorer.worker"):
        _, ctx = call(
            service,
            mms_request(JPEG),
            mms_request(b"definitely not a jpeg"),
            mms_request(JPEG),
        )
    assert [ctx.get_response_status(i)[0] for i in range(3)] == [200, 400, 200]
    assert sample("scorer_requests_total", model=model, code="200") == 2
    assert sample("scorer_requests_total", model=model, code="400") == 1
    assert sample("scorer_request_duration_seconds_count", model=model) == 3
    assert sample("scorer_batch_size_count", model=model) == 1  # one forward ...
    assert sample("scorer_batch_size_sum", model=model) == 2  # ... of the two good requests
    stage = "scorer_stage_duration_seconds_count"
    assert sample(stage, model=model, stage="decode") == 3
    assert sample(stage, model=model, stage="forward") == 1
    assert sample(stage, model=model, stage="encode") == 2
    assert sample("scorer_worker_resident_memory_bytes", model=model) > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "scorer.worker"]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    requests = [event for event in events if event.get("event") == "request"]
    assert [(r["request_id"], r["status"], r["batch_size"]) for r in requests] == [
        ("req-0", 200, 3),
        ("req-1", 400, 3),
        ("req-2", 200, 3),
    ]
    assert all(r["model"] == model and r["ms"] >= 0 for r in requests)
    # the fields of docs/observability.md, the same for every request of the batch but sizes
    assert [(r["bytes_in"], r["content_type"]) for r in requests] == [
        (len(JPEG), "image/jpeg"),
        (len(b"definitely not a jpeg"), "image/jpeg"),
        (len(JPEG), "image/jpeg"),
    ]
    assert requests[0]["bytes_out"] > 0 and requests[0]["time"].endswith("+00:00")
    assert set(requests[0]["stages_ms"]) == {"decode", "forward", "encode"}
    assert "definitely" not in " ".join(lines)  # never the payload


def test_loads_are_counted_by_outcome(
    tmp_path: Path, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, val in worker_env.items():
        monkeypatch.setenv(key, val)
    monkeypatch.setattr(handler_service, "_service", None)
    good = creative_model_dir(tmp_path, "metrics-load")
    context = Context("metrics-load", str(good), None, 1, None, mms.__version__)
    assert handler_service.handle(None, context) is None
    assert sample("scorer_model_loads_total", model="metrics-load", outcome="success") == 1
    assert sample("scorer_model_load_duration_seconds_count", model="metrics-load") == 1
    monkeypatch.setattr(handler_service, "_service", None)
    missing = Context("metrics-gone", str(tmp_path / "absent"), None, 1, None, mms.__version__)
    with pytest.raises(Exception):  # noqa: B017 - whatever the failure, it is counted
        handler_service.handle(None, missing)
    assert sample("scorer_model_loads_total", model="metrics-gone", outcome="error") == 1
    assert sample("scorer_model_load_duration_seconds_count", model="metrics-gone") == 0

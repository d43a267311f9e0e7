"""CloudWatch embedded metric format lines (scorer.metrics.emf, scorer.frontend.emf)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from scorer.cache.cache import ModelCache
from scorer.config import load_config, to_environ
from scorer.errors import ConfigError
from scorer.frontend.backend import ModelServerEndpoint
from scorer.frontend.emf import emf_reporting
from scorer.metrics.emf import (
    EmfDocuments,
    EmfReporter,
    EmfSettings,
    emf_settings,
    metric_name,
    start_reporter,
)

NOW_MS = 1_700_000_000_000

# The valid example of the specification ("Specification: Embedded metric format",
# Amazon CloudWatch User Guide), and the units its JSON schema allows.
SPEC_EXAMPLE = """
{
  "_aws": {
    "Timestamp": 1574109732004,
    "CloudWatchMetrics": [
      {
        "Namespace": "lambda-function-metrics",
        "Dimensions": [["functionVersion"]],
        "Metrics": [{"Name": "time", "Unit": "Milliseconds"}]
      }
    ]
  },
  "functionVersion": "$LATEST",
  "time": 100,
  "requestId": "989ffbf8-9ace-4817-a57c-e4dd734019ee"
}
"""
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_valid_emf(document: dict[str, Any]) -> None:
    """The specification's rules (with CloudWatch's current 30 dimensions per set)."""
    metadata = document["_aws"]
    assert set(metadata) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(metadata["Timestamp"], int)
    assert metadata["CloudWatchMetrics"]
    for directive in metadata["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert 1 <= len(directive["Namespace"]) <= 255
        assert len(directive["Dimensions"]) >= 1
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(document[key], str) and document[key]
        assert 1 <= len(directive["Metrics"]) <= 100
        for definition in directive["Metrics"]:
            assert set(definition) <= {"Name", "Unit"}
            assert 1 <= len(definition["Name"]) <= 255
            assert definition.get("Unit", "None") in UNITS
            value = document[definition["Name"]]
            if isinstance(value, dict):
                assert_valid_distribution(value)
                continue
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100 and all(_number(v) for v in values)


def assert_valid_distribution(value: dict[str, Any]) -> None:
    """A histogram member as AWS's EMF libraries write one: distinct values with their counts,
    and the statistic set they make (which CloudWatch checks for consistency)."""
    assert list(value) == ["Values", "Counts", "Max", "Min", "Count", "Sum"]
    values, counts = value["Values"], value["Counts"]
    assert 1 <= len(values) == len(counts) <= 100
    assert all(_number(v) for v in values) and all(_number(c) and c > 0 for c in counts)
    assert values == sorted(set(values))
    assert value["Count"] == sum(counts)
    assert value["Max"] == max(values) and value["Min"] == min(values)
    assert value["Sum"] == pytest.approx(sum(v * c for v, c in zip(values, counts, strict=True)))


def documents_of(registry: CollectorRegistry, state: EmfDocuments) -> list[dict[str, Any]]:
    found = state.documents(registry.collect(), NOW_MS)
    for document in found:
        assert_valid_emf(document)
        json.dumps(document)  # JSON as it is
    return found


def by_dimensions(documents: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each document under its first dimension set's values (one per set here)."""
    found = {}
    for document in documents:
        keys = document["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
        found[tuple(document[key] for key in keys)] = document
    return found


def worker_registry() -> tuple[CollectorRegistry, Counter, Histogram, Gauge]:
    registry = CollectorRegistry()
    requests = Counter("scorer_requests", "r", ["model", "code"], registry=registry)
    duration = Histogram(
        "scorer_request_duration_seconds", "d", ["model"], registry=registry, buckets=(0.1, 1)
    )
    loaded = Gauge("scorer_models_loaded", "l", ["model"], registry=registry)
    return registry, requests, duration, loaded


def test_the_checker_accepts_the_specification_example() -> None:
    assert_valid_emf(json.loads(SPEC_EXAMPLE))


def test_a_model_document_has_the_specification_shape() -> None:
    registry, requests, duration, loaded = worker_registry()
    requests.labels("m1", "200").inc(3)
    duration.labels("m1").observe(0.1)
    duration.labels("m1").observe(0.3)
    loaded.labels("m1").set(1)

    found = documents_of(registry, EmfDocuments("scorer"))

    assert found == [
        {
            "_aws": {
                "Timestamp": NOW_MS,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "scorer",
                        "Dimensions": [["model"]],
                        "Metrics": [
                            {"Name": "ModelsLoaded", "Unit": "None"},
                            {"Name": "RequestDuration", "Unit": "Milliseconds"},
                        ],
                    }
                ],
            },
            "model": "m1",
            "ModelsLoaded": 1,
            # 0.1 s in the bucket le=0.1, 0.3 s in le=1: each bucket's bound, in ms
            "RequestDuration": {
                "Values": [100, 1000],
                "Counts": [1, 1],
                "Max": 1000,
                "Min": 100,
                "Count": 2,
                "Sum": 1100,
            },
        },
        {
            "_aws": {
                "Timestamp": NOW_MS,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "scorer",
                        "Dimensions": [["model", "code"], ["model"]],
                        "Metrics": [{"Name": "Requests", "Unit": "Count"}],
                    }
                ],
            },
            "model": "m1",
            "code": "200",
            "Requests": 3,
        },
    ]


def test_names_and_units_follow_the_prometheus_names() -> None:
    assert metric_name("scorer_request_duration_seconds", "histogram") == (
        "RequestDuration",
        "Milliseconds",
        1000.0,
    )
    assert metric_name("scorer_worker_resident_memory_bytes", "gauge") == (
        "WorkerResidentMemory",
        "Bytes",
        1.0,
    )
    assert metric_name("scorer_cache_load_failures", "counter") == (
        "CacheLoadFailures",
        "Count",
        1.0,
    )
    assert metric_name("scorer_batch_size", "histogram") == ("BatchSize", "None", 1.0)


def test_server_wide_figures_have_an_empty_dimension_set() -> None:
    registry = CollectorRegistry()
    Counter("scorer_cache_hits", "h", registry=registry).inc(4)
    footprint = Gauge("scorer_cache_footprint_bytes", "f", ["budget"], registry=registry)
    footprint.labels("extracted").set(2048)

    found = documents_of(registry, EmfDocuments("scorer"))

    plain = by_dimensions(found)
    assert plain[()]["CacheHits"] == 4
    assert plain[()]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert plain[("extracted",)]["CacheFootprint"] == 2048
    assert plain[("extracted",)]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "CacheFootprint", "Unit": "Bytes"}
    ]


def test_counters_and_histograms_report_only_the_interval() -> None:
    registry, requests, duration, loaded = worker_registry()
    state = EmfDocuments("scorer")
    requests.labels("m1", "200").inc(3)
    duration.labels("m1").observe(0.1)
    loaded.labels("m1").set(1)
    documents_of(registry, state)

    requests.labels("m1", "200").inc(2)
    requests.labels("m1", "500").inc()
    duration.labels("m1").observe(0.5)
    duration.labels("m1").observe(0.7)
    second = by_dimensions(documents_of(registry, state))

    assert second[("m1", "200")]["Requests"] == 2
    assert second[("m1", "500")]["Requests"] == 1
    assert second[("m1",)]["RequestDuration"]["Values"] == [1000]  # both in le=1
    assert second[("m1",)]["RequestDuration"]["Counts"] == [2]  # not the first interval's
    assert second[("m1",)]["ModelsLoaded"] == 1

    third = by_dimensions(documents_of(registry, state))
    assert set(third) == {("m1",)}  # nothing counted: only the gauge
    assert "RequestDuration" not in third[("m1",)]
    assert third[("m1",)]["ModelsLoaded"] == 1


def test_a_histogram_is_written_as_bucket_bounds_with_the_interval_counts() -> None:
    registry = CollectorRegistry()
    duration = Histogram(
        "scorer_request_duration_seconds", "d", ["model"], registry=registry, buckets=(0.1, 1, 5)
    )
    state = EmfDocuments("scorer")

    def count() -> float:
        value = registry.get_sample_value("scorer_request_duration_seconds_count", {"model": "m1"})
        assert value is not None
        return value

    for seconds in (0.05, 0.05, 0.3, 7.0):
        duration.labels("m1").observe(seconds)
    first = by_dimensions(documents_of(registry, state))[("m1",)]["RequestDuration"]
    before = count()
    for seconds in (0.2, 0.9, 3.0, 10.0, 20.0):
        duration.labels("m1").observe(seconds)
    second = by_dimensions(documents_of(registry, state))[("m1",)]["RequestDuration"]

    # le=0.1: 2, le=1: 1, +Inf: 1 (written under the largest finite bound, 5 s)
    assert first == {
        "Values": [100, 1000, 5000],
        "Counts": [2, 1, 1],
        "Max": 5000,
        "Min": 100,
        "Count": 4,
        "Sum": 6200,
    }
    # the second interval only: le=1: 2, le=5: 1, +Inf: 2; the last two share 5 s
    assert second == {
        "Values": [1000, 5000],
        "Counts": [2, 3],
        "Max": 5000,
        "Min": 1000,
        "Count": 5,
        "Sum": 17000,
    }
    assert sum(second["Counts"]) == count() - before == 5


def test_each_stage_is_a_distribution_under_model_and_stage() -> None:
    registry = CollectorRegistry()
    stages = Histogram(
        "scorer_stage_duration_seconds",
        "s",
        ["model", "stage"],
        registry=registry,
        buckets=(0.01, 0.1),
    )
    stages.labels("m1", "decode").observe(0.002)
    stages.labels("m1", "forward").observe(0.05)
    stages.labels("m1", "forward").observe(0.08)

    found = by_dimensions(documents_of(registry, EmfDocuments("scorer")))

    assert found[("m1", "decode")]["StageDuration"]["Values"] == [10]
    assert found[("m1", "forward")]["StageDuration"]["Values"] == [100]
    assert found[("m1", "forward")]["StageDuration"]["Counts"] == [2]
    directive = found[("m1", "forward")]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["model", "stage"]]  # no roll-up for histograms
    assert directive["Metrics"] == [{"Name": "StageDuration", "Unit": "Milliseconds"}]


def test_more_than_100_buckets_are_merged_under_their_highest_bound() -> None:
    bounds = tuple(float(second) for second in range(1, 251))
    registry = CollectorRegistry()
    wait = Histogram("scorer_wait_seconds", "w", ["model"], registry=registry, buckets=bounds)
    for bound in bounds:
        wait.labels("m").observe(bound - 0.5)  # one in each bucket
    wait.labels("m").observe(1000.0)  # +Inf, written under 250 s

    (document,) = documents_of(registry, EmfDocuments("scorer"))

    # 250 distinct values, so groups of 3 neighbours: 83 full groups and 250 s alone
    assert document["Wait"]["Values"] == [3000 * (i + 1) for i in range(83)] + [250_000]
    assert document["Wait"]["Counts"] == [3] * 83 + [2]
    assert document["Wait"]["Count"] == 251


def test_a_summary_is_its_mean_counted_once_per_observation() -> None:
    registry = CollectorRegistry()
    wait = Summary("scorer_queue_wait_seconds", "q", ["model"], registry=registry)
    wait.labels("m").observe(0.2)
    wait.labels("m").observe(0.4)

    (document,) = documents_of(registry, EmfDocuments("scorer"))

    assert document["QueueWait"] == {
        "Values": [300],
        "Counts": [2],
        "Max": 300,
        "Min": 300,
        "Count": 2,
        "Sum": 600,
    }


class Replay:
    """A collector that hands out one prepared scrape per call."""

    def __init__(self, *scrapes: list[Metric]) -> None:
        self.scrapes = list(scrapes)

    def collect(self) -> Iterable[Metric]:
        return self.scrapes.pop(0)


def requests_family(value: float) -> Metric:
    family = CounterMetricFamily("scorer_requests", "r", labels=["model", "code"])
    family.add_metric(["m1", "200"], value)
    return family


def duration_family(count: float, total: float) -> Metric:
    family = HistogramMetricFamily("scorer_request_duration_seconds", "d", labels=["model"])
    family.add_metric(["m1"], [("1.0", count), ("+Inf", count)], total)
    return family


def test_a_counter_that_goes_down_was_reset_and_counts_its_new_value() -> None:
    replay = Replay(
        [requests_family(10), duration_family(4, 2.0)],
        [requests_family(4), duration_family(2, 0.6)],  # a restart: both went down
    )
    state = EmfDocuments("scorer")
    first = by_dimensions(state.documents(replay.collect(), NOW_MS))
    second = by_dimensions(state.documents(replay.collect(), NOW_MS))

    assert first[("m1", "200")]["Requests"] == 10
    assert first[("m1",)]["RequestDuration"]["Counts"] == [4]
    assert second[("m1", "200")]["Requests"] == 4
    assert second[("m1",)]["RequestDuration"]["Counts"] == [2]
    assert second[("m1",)]["RequestDuration"]["Values"] == [1000]


def test_over_100_metrics_split_into_documents_with_the_same_dimensions() -> None:
    registry = CollectorRegistry()
    for index in range(150):
        Gauge(f"scorer_figure_{index:03d}", "g", ["model"], registry=registry).labels("m").set(
            index
        )

    found = documents_of(registry, EmfDocuments("scorer"))

    assert [len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in found] == [100, 50]
    assert all(d["model"] == "m" for d in found)
    values = {
        name: value
        for document in found
        for name, value in document.items()
        if name.startswith("Figure")
    }
    assert values == {f"Figure{index:03d}": index for index in range(150)}


def test_a_label_set_over_30_dimensions_is_left_out() -> None:
    registry = CollectorRegistry()
    thirty = [f"l{index:02d}" for index in range(29)]
    Gauge("scorer_wide", "w", ["model", *thirty], registry=registry).labels("m", *thirty).set(1)
    Gauge("scorer_too_wide", "w", ["model", *thirty, "extra"], registry=registry).labels(
        "m", *thirty, "x"
    ).set(2)

    found = documents_of(registry, EmfDocuments("scorer"))

    assert len(found) == 1
    assert found[0]["Wide"] == 1 and "TooWide" not in found[0]
    assert len(found[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == 30


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stop_writes_the_remainder_once() -> None:
    registry, requests, _, _ = worker_registry()
    stream = io.StringIO()
    reporter = EmfReporter(registry.collect, EmfSettings("ns", 3600), stream, lambda: 1700.0)
    reporter.start()
    requests.labels("m1", "200").inc(5)

    reporter.stop()
    reporter.stop()

    assert lines(stream) == [
        {
            "_aws": {
                "Timestamp": 1_700_000,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "ns",
                        "Dimensions": [["model", "code"], ["model"]],
                        "Metrics": [{"Name": "Requests", "Unit": "Count"}],
                    }
                ],
            },
            "model": "m1",
            "code": "200",
            "Requests": 5,
        }
    ]


def test_the_thread_writes_every_interval() -> None:
    registry, requests, _, _ = worker_registry()
    stream = io.StringIO()
    reporter = EmfReporter(registry.collect, EmfSettings("ns", 0.05), stream)
    requests.labels("m1", "200").inc(2)
    reporter.start()
    try:
        deadline = time.monotonic() + 10
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        requests.labels("m1", "200").inc(1)
    finally:
        reporter.stop()
    counts = [line["Requests"] for line in lines(stream)]
    assert counts[0] == 2
    assert sum(counts) == 3


def test_a_failing_collection_is_logged_and_the_next_report_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, requests, _, _ = worker_registry()
    calls = []

    def source() -> Iterable[Metric]:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("metrics files unreadable")
        return registry.collect()

    stream = io.StringIO()
    reporter = EmfReporter(source, EmfSettings("ns", 3600), stream)
    requests.labels("m1", "200").inc(1)
    assert reporter.flush() == 1
    requests.labels("m1", "200").inc(2)
    assert reporter.flush() == 0
    requests.labels("m1", "200").inc(4)
    assert reporter.flush() == 1

    assert [line["Requests"] for line in lines(stream)] == [1, 6]
    assert "metrics report failed" in caplog.text


def test_a_broken_stream_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    registry, requests, _, _ = worker_registry()
    stream = io.StringIO()
    stream.close()
    requests.labels("m1", "200").inc(1)
    reporter = EmfReporter(registry.collect, EmfSettings("ns", 3600), stream)
    reporter.stop()
    assert "metrics report failed" in caplog.text


def test_turned_off_nothing_is_started_or_written() -> None:
    config = load_config({"SCORER_EMF": "off"})
    registry, requests, _, _ = worker_registry()
    requests.labels("m1", "200").inc(1)
    stream = io.StringIO()

    assert emf_settings(config) is None
    assert start_reporter(emf_settings(config), registry.collect, stream) is None
    assert stream.getvalue() == ""


def test_the_configuration() -> None:
    plain = load_config({})
    assert (plain.emf, plain.metrics_namespace, plain.emf_interval_seconds) == (True, "scorer", 60)
    assert emf_settings(plain) == EmfSettings("scorer", 60.0)
    custom = load_config(
        {
            "SCORER_EMF": "true",
            "SCORER_METRICS_NAMESPACE": "Creative/Scoring",
            "SCORER_EMF_INTERVAL_SECONDS": "10",
        }
    )
    assert emf_settings(custom) == EmfSettings("Creative/Scoring", 10.0)
    off = dataclasses.replace(custom, emf=False)
    assert load_config(to_environ(custom)) == custom
    assert load_config(to_environ(off)) == off
    for bad in ({"SCORER_EMF_INTERVAL_SECONDS": "0"}, {"SCORER_EMF": "sometimes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config(bad)
    for namespace in ("AWS/SageMaker", "x" * 256, "émf"):
        with pytest.raises(ConfigError, match="SCORER_METRICS_NAMESPACE"):
            load_config({"SCORER_METRICS_NAMESPACE": namespace})


def test_a_front_end_reports_the_cache_taken_on_its_event_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = SimpleNamespace(
        hits=3,
        misses=1,
        loads=1,
        evictions=0,
        failures=0,
        resident_models=("a.tar.gz",),
        loading=(),
        footprint={"extracted": 100},
    )
    cache = SimpleNamespace(
        stats=lambda: stats, resident=lambda: (SimpleNamespace(name="h1", key="a.tar.gz"),)
    )
    endpoint = ModelServerEndpoint("http://127.0.0.1:1", metrics_dir=tmp_path / "absent")

    async def serve() -> None:
        async with emf_reporting(endpoint, cast(ModelCache, cache), EmfSettings("ns", 3600)):
            await asyncio.sleep(0)

    asyncio.run(serve())

    found = by_dimensions([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert found[()]["CacheHits"] == 3
    assert found[()]["CacheMisses"] == 1
    assert found[()]["CacheResidentModels"] == 1
    assert "CacheEvictions" not in found[()]  # nothing to report
    assert found[("extracted",)]["CacheFootprint"] == 100

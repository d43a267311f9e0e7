"""The ``/metrics`` figures as CloudWatch embedded metric format (EMF) lines on stdout.

SageMaker sends a container's stdout to CloudWatch Logs, and CloudWatch Logs turns a log
event that is an EMF document into metrics: per-model metrics reach CloudWatch with no
agent. :class:`EmfReporter` collects a Prometheus source (the same collectors ``/metrics``
serves) every interval and writes one JSON document per line; docs/observability.md lists
what it writes. The format is written here, once (the specification: CloudWatch's
"Specification: Embedded metric format"); aws-embedded-metrics does not fit a long-running
server that reports deltas of Prometheus counters: its loggers flush through an
environment it detects (by default a CloudWatch agent's socket) and read their settings
from ``AWS_EMF_*`` variables.

How Prometheus samples become EMF metrics:

* a family's name loses ``scorer_`` and a unit suffix and becomes CamelCase
  (``scorer_request_duration_seconds`` -> ``RequestDuration``); ``_seconds`` values are
  written in Milliseconds, ``_bytes`` in Bytes, counters in Count, anything else in None;
* counters: the increase over the interval (omitted while 0). A value below the previous
  one is a reset, as Prometheus' ``increase()`` reads it: the whole new value counts. A
  series seen for the first time counts from zero (the reporter starts with the server);
* histograms: a distribution, ``{"Values": [...], "Counts": [...], "Max", "Min", "Count",
  "Sum"}`` (the shape AWS's own EMF libraries write), from which CloudWatch computes
  percentiles. Each bucket that gained observations in the interval is one value, its
  upper bound (``le``), with the bucket's increase as its count; the ``+Inf`` bucket takes
  the largest finite bound. So the ``p99`` CloudWatch reports is the bound of the bucket
  that holds the 99th percentile, as ``le`` means "at most". ``Max``, ``Min``, ``Count``
  and ``Sum`` are those of the values written, a consistent statistic set: ``Count`` is
  exact, the others are of bounds, not of the observations. More than 100 values (the
  specification's limit) are merged, neighbours together, each group under its highest
  bound. Omitted when nothing was observed;
* summaries, and histograms with no finite bucket: one value, the interval's mean
  (``sum`` increase / ``count`` increase), counted ``count`` increase times;
* gauges: the value now; info and other types are left out;
* each label set is one document whose labels are its dimensions, ``model`` first. A
  counter with labels besides ``model`` (``code``, ``outcome``) is also published under
  ``model`` alone, so ``Requests`` per model is one metric. No labels: an empty dimension
  set (server-wide figures). Past 100 metrics a document is split; a label set of more
  than 30 labels is left out (and logged once).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client.metrics_core import Metric

from scorer.config import ServerConfig

logger = logging.getLogger(__name__)

MAX_METRICS_PER_DIRECTIVE = 100  # the specification's limit on MetricDefinitions
MAX_DIMENSIONS_PER_SET = 30  # CloudWatch's limit on a metric's dimensions
MAX_VALUES_PER_METRIC = 100  # the specification's limit on the values of one member
MODEL_LABEL = "model"
PREFIX = "scorer_"
_UNIT_SUFFIXES = (("_seconds", "Milliseconds", 1000.0), ("_bytes", "Bytes", 1.0))
_SPREAD_LABELS = frozenset({"le", "quantile"})  # a histogram's or summary's own labels

Source = Callable[[], Iterable[Metric]]
"""What a report collects: a collector's ``collect`` (the families of one scrape)."""
Labels = tuple[tuple[str, str], ...]
Document = dict[str, Any]


def _clean(value: float) -> float:
    """``value`` without binary noise from scaling (``0.025 * 1000`` is 25, not 25.000...04)."""
    return float(f"{value:.15g}")


@dataclass(frozen=True)
class Distribution:
    """One interval's observations of a histogram: distinct values, ascending, each with the
    number of observations it stands for."""

    values: tuple[float, ...]
    counts: tuple[float, ...]

    def scaled(self, factor: float) -> Distribution:
        """The same counts with the values in another unit."""
        return Distribution(tuple(_clean(v * factor) for v in self.values), self.counts)

    def is_finite(self) -> bool:
        """Whether every value and count is a finite number (CloudWatch takes no others)."""
        return all(math.isfinite(x) for x in (*self.values, *self.counts))

    def as_json(self) -> dict[str, float | int | list[float | int]]:
        """The EMF member: values and counts, and the statistic set they make."""
        total = _clean(sum(v * c for v, c in zip(self.values, self.counts, strict=True)))
        return {
            "Values": [_number(v) for v in self.values],
            "Counts": [_number(c) for c in self.counts],
            "Max": _number(max(self.values)),
            "Min": _number(min(self.values)),
            "Count": _number(sum(self.counts)),
            "Sum": _number(total),
        }


Figure = float | Distribution
"""A member's value over one interval: a number, or a histogram's distribution."""


def _distribution(pairs: Iterable[tuple[float, float]]) -> Distribution | None:
    """``(value, count)`` pairs as a distribution: empty counts dropped, equal values joined,
    ascending; past :data:`MAX_VALUES_PER_METRIC` values, neighbours are merged into groups
    of equal size, each under its highest value. None when nothing was counted."""
    joined: dict[float, float] = {}
    for value, count in pairs:
        if count > 0:
            joined[value] = joined.get(value, 0.0) + count
    ordered = sorted(joined.items())
    if not ordered:
        return None
    size = -(-len(ordered) // MAX_VALUES_PER_METRIC)  # ceiling division
    groups = [ordered[start : start + size] for start in range(0, len(ordered), size)]
    return Distribution(
        tuple(group[-1][0] for group in groups),
        tuple(sum(count for _, count in group) for group in groups),
    )


@dataclass(frozen=True)
class EmfSettings:
    """Where and how often the documents go."""

    namespace: str = "scorer"
    interval_seconds: float = 60.0


def emf_settings(config: ServerConfig) -> EmfSettings | None:
    """The EMF settings of ``config``; None when ``SCORER_EMF`` turns it off."""
    if not config.emf:
        return None
    return EmfSettings(config.metrics_namespace, float(config.emf_interval_seconds))


def metric_name(family: str, kind: str) -> tuple[str, str, float]:
    """A Prometheus family's EMF name, its CloudWatch unit and the factor to that unit."""
    base = family.removeprefix(PREFIX)
    unit, scale = ("Count" if kind == "counter" else "None"), 1.0
    for suffix, suffix_unit, suffix_scale in _UNIT_SUFFIXES:
        if base.endswith(suffix):
            base, unit, scale = base.removesuffix(suffix), suffix_unit, suffix_scale
            break
    return "".join(part[:1].upper() + part[1:] for part in base.split("_")), unit, scale


def _ordered(labels: dict[str, str]) -> Labels:
    """Labels with a value (an empty one is no label in Prometheus), ``model`` first."""
    present = [(key, value) for key, value in labels.items() if value != ""]
    return tuple(sorted(present, key=lambda item: (item[0] != MODEL_LABEL, item[0])))


def _number(value: float) -> float | int:
    """``value`` as JSON writes it best: 3 rather than 3.0."""
    value = float(value)  # a collector may hand out ints
    return int(value) if value.is_integer() else value


def _scaled(figure: Figure, scale: float) -> Figure | None:
    """``figure`` in its unit; None if it is not finite (CloudWatch takes no NaN or Inf)."""
    if isinstance(figure, Distribution):
        distribution = figure.scaled(scale)
        return distribution if distribution.is_finite() else None
    value = figure * scale
    return value if math.isfinite(value) else None


def _json(figure: Figure) -> Any:
    """A member's value as the document holds it."""
    return figure.as_json() if isinstance(figure, Distribution) else _number(figure)


class EmfDocuments:
    """Turns successive collections into EMF documents; keeps the cumulative values of the
    previous one, so that counters and histograms report what happened in between."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._previous: dict[tuple[str, Labels], float] = {}
        self._too_many_labels: set[str] = set()

    def documents(self, families: Iterable[Metric], timestamp_ms: int) -> list[Document]:
        """The documents for everything collected in ``families`` since the last call."""
        groups: dict[tuple[Labels, bool], dict[str, tuple[str, Figure]]] = {}
        for family in families:
            name, unit, scale = metric_name(family.name, family.type)
            for labels, value in self._figures(family):
                if len(labels) > MAX_DIMENSIONS_PER_SET:
                    self._warn_labels(family.name, len(labels))
                    continue
                scaled = _scaled(value, scale)
                if scaled is None:
                    continue
                keys = {key for key, _ in labels}
                rollup = family.type == "counter" and MODEL_LABEL in keys and len(keys) > 1
                metrics = groups.setdefault((labels, rollup), {})
                if name in keys or name == "_aws" or name in metrics:
                    logger.warning("EMF: %s (%s) collides with another member", name, family.name)
                    continue
                metrics[name] = (unit, scaled)
        found: list[Document] = []
        for (labels, rollup), metrics in sorted(groups.items()):
            found.extend(self._documents(labels, rollup, metrics, timestamp_ms))
        return found

    def _figures(self, family: Metric) -> Iterable[tuple[Labels, Figure]]:
        """``(labels, value)`` of the interval for each series of ``family``."""
        if family.type == "gauge":
            for sample in family.samples:
                if sample.name == family.name:
                    yield _ordered(sample.labels), sample.value
        elif family.type == "counter":
            for sample in family.samples:
                if sample.name == family.name + "_total":
                    labels = _ordered(sample.labels)
                    increase = self._increase(sample.name, labels, sample.value)
                    if increase > 0:
                        yield labels, increase
        elif family.type in {"histogram", "summary"}:
            yield from self._distributions(family)

    def _distributions(self, family: Metric) -> Iterable[tuple[Labels, Distribution]]:
        totals: dict[Labels, dict[str, float]] = {}
        buckets: dict[Labels, dict[str, float]] = {}  # le -> cumulative count
        for sample in family.samples:
            part = sample.name.removeprefix(family.name)
            plain = _ordered({k: v for k, v in sample.labels.items() if k not in _SPREAD_LABELS})
            if part in {"_sum", "_count"}:
                totals.setdefault(plain, {})[part] = sample.value
            elif part == "_bucket" and "le" in sample.labels:
                buckets.setdefault(plain, {})[sample.labels["le"]] = sample.value
        for labels, parts in totals.items():
            if "_sum" not in parts or "_count" not in parts:
                continue
            found = self._interval(family.name, labels, parts, buckets.get(labels, {}))
            if found is not None:
                yield labels, found

    def _interval(
        self, family: str, labels: Labels, parts: dict[str, float], cumulative: dict[str, float]
    ) -> Distribution | None:
        """One series' observations since the previous report, per bucket."""
        bounds = sorted(cumulative, key=float)
        counts: dict[str, float] = {}  # each bucket's own count, a counter too
        below = 0.0
        for le in bounds:
            counts[le], below = cumulative[le] - below, cumulative[le]
        keys = {le: (family + "_bucket", (*labels, ("le", le))) for le in bounds}
        keys["_count"], keys["_sum"] = (family + "_count", labels), (family + "_sum", labels)
        now = {**counts, "_count": parts["_count"], "_sum": parts["_sum"]}
        before = {part: self._previous.get(key, 0.0) for part, key in keys.items()}
        self._previous.update((key, now[part]) for part, key in keys.items())
        if any(now[part] < before[part] for part in now if part != "_sum"):
            before = dict.fromkeys(before, 0.0)  # a reset: everything counted is new
        observed = now["_count"] - before["_count"]
        if observed <= 0:
            return None
        finite = [le for le in bounds if math.isfinite(float(le))]
        if not finite:  # a summary, or a histogram with the +Inf bucket only
            mean = (now["_sum"] - before["_sum"]) / observed
            return _distribution([(mean, observed)])
        top = float(finite[-1])
        return _distribution(
            (float(le) if math.isfinite(float(le)) else top, now[le] - before[le]) for le in bounds
        )

    def _increase(self, sample: str, labels: Labels, value: float) -> float:
        before = self._previous.get((sample, labels), 0.0)
        self._previous[(sample, labels)] = value
        return value if value < before else value - before

    def _warn_labels(self, family: str, count: int) -> None:
        if family not in self._too_many_labels:
            self._too_many_labels.add(family)
            logger.warning(
                "EMF: %s has %d labels, over CloudWatch's %d dimensions; left out",
                family, count, MAX_DIMENSIONS_PER_SET,
            )  # fmt: skip

    def _documents(
        self,
        labels: Labels,
        rollup: bool,
        metrics: dict[str, tuple[str, Figure]],
        timestamp_ms: int,
    ) -> Iterable[Document]:
        dimensions = [[key for key, _ in labels]]
        if rollup:
            dimensions.append([MODEL_LABEL])
        names = sorted(metrics)
        for start in range(0, len(names), MAX_METRICS_PER_DIRECTIVE):
            chunk = names[start : start + MAX_METRICS_PER_DIRECTIVE]
            directive = {
                "Namespace": self.namespace,
                "Dimensions": dimensions,
                "Metrics": [{"Name": name, "Unit": metrics[name][0]} for name in chunk],
            }
            document: Document = {
                "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [directive]},
                **dict(labels),
            }
            document.update((name, _json(metrics[name][1])) for name in chunk)
            yield document


class EmfReporter:
    """Writes the EMF documents of ``source`` every interval, from a daemon thread, and the
    remainder on :meth:`stop`. A failure is logged and the next interval tries again (what
    was not reported then is in the next one's increase); it never raises.

    Args:
        source: what to collect (called on the reporter's thread, and by :meth:`stop`).
        settings: the namespace and the interval.
        stream: where the lines go (default: ``sys.stdout`` at the time of writing).
        clock: the time of a document, in seconds since the epoch.
    """

    def __init__(
        self,
        source: Source,
        settings: EmfSettings,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.interval_seconds > 0:
            raise ValueError(f"the EMF interval must be > 0, got {settings.interval_seconds}")
        self.source = source
        self.settings = settings
        self._stream = stream
        self._clock = clock
        self._documents = EmfDocuments(settings.namespace)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Report every interval from a daemon thread until :meth:`stop`."""
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(target=self._run, name="scorer-emf", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.settings.interval_seconds):
            self.flush()

    def flush(self, timeout: float = 30.0) -> int:
        """Collect now and write what changed since the last report; the documents written
        (0 after a failure, which is logged)."""
        if not self._lock.acquire(timeout=timeout):
            logger.warning("EMF: a report is still running; skipped")
            return 0
        try:
            documents = self._documents.documents(list(self.source()), int(self._clock() * 1000))
            stream = self._stream if self._stream is not None else sys.stdout
            for document in documents:
                stream.write(json.dumps(document, separators=(",", ":")) + "\n")
                stream.flush()  # one line per write: no interleaving with MMS's output
            return len(documents)
        except Exception:
            logger.exception("EMF: the metrics report failed")
            return 0
        finally:
            self._lock.release()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and write the remainder (once; later calls do nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush(timeout)


def start_reporter(
    settings: EmfSettings | None, source: Source, stream: TextIO | None = None
) -> EmfReporter | None:
    """A started :class:`EmfReporter` over ``source``, or None when EMF is off."""
    if settings is None:
        return None
    reporter = EmfReporter(source, settings, stream)
    reporter.start()
    return reporter

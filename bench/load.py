"""Closed-loop HTTP load with keep-alive, and the in-process limit, measured the same way."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import httpx
import psutil

from scorer.inference.batching import Batcher, BatchRequest
from scorer.inference.chain import Chain
from scorer.inference.context import RequestContext
from scorer.modelserver.workers import served_models


@dataclass
class Measurement:
    """Throughput and latency of one run."""

    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_percent: float  # of all cores of the machine, for the measured processes

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants, in bytes (0 if it is gone)."""
    total = 0
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error:
        return total
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def idle_tree_rss(pid: int, timeout: float = 30.0) -> int:
    """RSS of a server's process tree once no model worker is left in it (within
    ``timeout`` s). An unloaded model's worker exits a moment after ``DELETE /models``
    answers: sampled at once, the tree holds it (about 400 MB) or not, by chance."""
    deadline = time.monotonic() + timeout
    while served_models(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return tree_rss(pid)


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[index]


def _tree_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
            for child in proc.children(recursive=True):
                with_times = child.cpu_times()
                total += with_times.user + with_times.system
        except psutil.Error:
            continue
    return total


def summarise(
    label: str,
    concurrency: int,
    latencies: list[float],
    errors: int,
    seconds: float,
    images: int,
    cpu_seconds: float,
) -> Measurement:
    ordered = sorted(latencies)
    count = len(ordered)
    return Measurement(
        label=label,
        concurrency=concurrency,
        requests=count,
        errors=errors,
        seconds=round(seconds, 2),
        rps=round(count / seconds, 2) if seconds else 0.0,
        images_per_s=round(count * images / seconds, 2) if seconds else 0.0,
        p50_ms=round(statistics.median(ordered) * 1000, 2) if ordered else float("nan"),
        p95_ms=round(_percentile(ordered, 0.95) * 1000, 2),
        p99_ms=round(_percentile(ordered, 0.99) * 1000, 2),
        cpu_percent=round(100 * cpu_seconds / seconds / psutil.cpu_count(), 1) if seconds else 0,
    )


def http_load(
    label: str,
    url: str,
    body: bytes,
    content_type: str,
    concurrency: int,
    duration: float,
    warmup: float,
    images: int,
    server_pids: list[int],
) -> Measurement:
    """``concurrency`` threads, each with its own keep-alive client, sending from the
    start; measured is the window of ``duration`` s after ``warmup``: the requests that
    finished in it (throughput and latencies) and the server's CPU over it. Counting by
    finish time keeps long requests honest: counted by start, the requests in flight when
    the window opened finished in it uncounted (up to ``concurrency`` requests short, 10 %
    of resnet50's at c=16), and one longer than the window was never counted at all."""
    window = [0.0, 0.0]  # start, stop
    finished: list[list[tuple[float, float]]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    barrier = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            while True:
                t0 = time.perf_counter()
                if t0 >= window[1]:
                    return
                response = client.post(url, content=body, headers=headers)
                t1 = time.perf_counter()
                if response.status_code != 200:
                    errors[index] += 1
                else:
                    finished[index].append((t0, t1))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    processes = [psutil.Process(pid) for pid in server_pids]
    window[0] = time.perf_counter() + warmup
    window[1] = window[0] + duration
    barrier.wait()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu_before = _tree_cpu(processes)
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu = _tree_cpu(processes) - cpu_before
    for thread in threads:
        thread.join()
    start, stop = window
    latencies = [t1 - t0 for per in finished for t0, t1 in per if start <= t1 < stop]
    return summarise(label, concurrency, latencies, sum(errors), duration, images, cpu)


def in_process(
    label: str, run_once: Callable[[], object], duration: float, warmup: float, images: int
) -> Measurement:
    """The limit: the same work called in a loop in this process, no server."""
    end_warmup = time.perf_counter() + warmup
    while time.perf_counter() < end_warmup:
        run_once()
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    latencies: list[float] = []
    started = time.perf_counter()
    stop = started + duration
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        run_once()
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    cpu = sum(me.cpu_times()[:2]) - cpu_before
    return summarise(label, 1, latencies, 0, seconds, images, cpu)


def batched_in_process(
    label: str,
    chain: Chain,
    request: BatchRequest,
    batch: int,
    duration: float,
    warmup: float,
    images: int,
) -> Measurement:
    """The batched limit: the worker's batched path (:class:`Batcher`: ``batch`` copies of
    ``request`` decoded on the image pool, one forward pass) called in a loop in this
    process. Requests and images are counted per request; latencies are per call."""
    batcher = Batcher(chain)
    requests = [request] * batch

    def run_once() -> None:
        failed = [o for o in batcher.run(requests) if isinstance(o, BaseException)]
        if failed:
            raise failed[0]

    m = in_process(label, run_once, duration, warmup, images)
    return replace(
        m,
        requests=m.requests * batch,
        rps=round(m.rps * batch, 2),
        images_per_s=round(m.images_per_s * batch, 2),
    )


def json_request(body: bytes, content_type: str) -> BatchRequest:
    """A request as the worker gets it, answered as JSON."""
    context = RequestContext(model_name="x", content_type=content_type, accept="application/json")
    return BatchRequest(body, context)


class PingProbe:
    """``GET /ping`` every ``interval`` s on its own connection while a load runs.

    SageMaker gives each health check 2 s; this records what a check costs under load.
    """

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                status = client.get(self.url).status_code
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self.statuses.append(status)
                self._stop.wait(self.interval)

    def __enter__(self) -> PingProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | int]:
        """Count, p50/p99/max in ms and how many answers were not 200."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return {"n": 0}
        return {
            "n": len(ordered),
            "p50_ms": round(_percentile(ordered, 0.50), 2),
            "p99_ms": round(_percentile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1], 2),
            "not_200": sum(1 for s in self.statuses if s != 200),
        }


def call_overhead_us(run: Callable[[Callable[[], object]], object], calls: int = 5000) -> float:
    """Median extra microseconds ``run(fn)`` costs over calling a trivial ``fn`` directly."""

    def fn() -> int:
        return 1

    def median_us(call: Callable[[], object]) -> float:
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        samples.sort()
        return samples[len(samples) // 2] * 1e6

    return round(median_us(lambda: run(fn)) - median_us(fn), 1)

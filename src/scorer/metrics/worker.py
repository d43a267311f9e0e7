"""What a model worker counts and times; one model per worker process.

In an MMS worker ``PROMETHEUS_MULTIPROC_DIR`` is set (by :func:`scorer.modelserver.process
.environment`), so prometheus_client writes every value to this process's files in that
folder, and the server's ``/metrics`` sums the files of all workers
(:mod:`scorer.metrics.multiprocess`). Without it (tests, ``scorer validate``) the values
stay in this process.

Every metric has a ``model`` label: the model server's name for the model (in the cache
modes the hash of the key; ``scorer_cache_model_info`` maps it to the key).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psutil
from prometheus_client import Counter, Gauge, Histogram

STAGES = ("decode", "forward", "encode")
"""The chain's stages: ``input_fn``, ``predict_fn`` (or ``batch_predict_fn``), ``output_fn``."""

LOAD_OUTCOMES = ("success", "timeout", "out_of_memory", "error")

SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
LOAD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)

REQUESTS = Counter(
    "scorer_requests",
    "Invocations a model's workers answered, by HTTP status (MMS's own refusals, "
    "e.g. an unknown model or a full queue, never reach a worker).",
    ["model", "code"],
)
REQUEST_DURATION = Histogram(
    "scorer_request_duration_seconds",
    "Time in the worker from receiving a request's batch to its answer.",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
STAGE_DURATION = Histogram(
    "scorer_stage_duration_seconds",
    "Time in one chain stage: decode (input_fn, per request), forward (predict_fn, per "
    "forward pass), encode (output_fn, per request).",
    ["model", "stage"],
    buckets=SECONDS_BUCKETS,
)
BATCH_SIZE = Histogram(
    "scorer_batch_size",
    "Requests per forward pass.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
MODEL_LOADS = Counter(
    "scorer_model_loads",
    "Model loads in a worker, by outcome (success, timeout, out_of_memory, error).",
    ["model", "outcome"],
)
LOAD_DURATION = Histogram(
    "scorer_model_load_duration_seconds",
    "Time a successful load took in the worker (requirements, model_fn, warm-up).",
    ["model"],
    buckets=LOAD_BUCKETS,
)
MODELS_LOADED = Gauge(
    "scorer_models_loaded",
    "1 for each model a live worker has loaded; sum() is the number of models loaded.",
    ["model"],
    multiprocess_mode="livemax",
)
WORKER_RSS = Gauge(
    "scorer_worker_resident_memory_bytes",
    "Resident memory of the model's live workers, summed; each worker's as of its latest "
    "batch or load.",
    ["model"],
    multiprocess_mode="livesum",
)
WORKER_DEVICE_MEMORY = Gauge(
    "scorer_worker_device_memory_bytes",
    "GPU memory torch holds for the model in its live workers (torch.cuda.memory_allocated), "
    "summed; each worker's as of its latest batch or load. Absent on the CPU.",
    ["model"],
    multiprocess_mode="livesum",
)


def record_load(model: str, outcome: str, seconds: float | None = None) -> None:
    """Count one load of ``model`` (``outcome`` one of :data:`LOAD_OUTCOMES`); a successful
    one's duration is observed too."""
    if outcome not in LOAD_OUTCOMES:
        raise ValueError(f"unknown load outcome {outcome!r}")
    MODEL_LOADS.labels(model, outcome).inc()
    if outcome == "success" and seconds is not None:
        LOAD_DURATION.labels(model).observe(seconds)


class ModelMetrics:
    """One loaded model's metrics in this worker (label children bound once)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._duration = REQUEST_DURATION.labels(model)
        self._stages = {stage: STAGE_DURATION.labels(model, stage) for stage in STAGES}
        self._batch = BATCH_SIZE.labels(model)
        self._loaded = MODELS_LOADED.labels(model)
        self._rss = WORKER_RSS.labels(model)
        self._process = psutil.Process()

    def loaded(self, device_bytes: int | None = None) -> None:
        """The model serves in this worker now (until the worker ends)."""
        self._loaded.set(1)
        self.sample_memory(device_bytes)

    def request(self, code: int, seconds: float) -> None:
        """One request answered with HTTP ``code`` after ``seconds`` in the worker."""
        REQUESTS.labels(self.model, str(code)).inc()
        self._duration.observe(seconds)

    def forward(self, requests: int) -> None:
        """One forward pass over ``requests`` requests."""
        self._batch.observe(requests)

    def stage_observer(self, stage: str) -> Callable[[float], None]:
        """What records one duration (seconds) of ``stage`` (one of :data:`STAGES`)."""
        return self._stages[stage].observe

    def sample_memory(self, device_bytes: int | None = None) -> None:
        """Record this worker's resident memory now, and the GPU memory its model holds
        (``device_bytes``, measured by the caller; None on the CPU: not recorded)."""
        with contextlib.suppress(psutil.Error):
            self._rss.set(self._process.memory_info().rss)
        if device_bytes is not None:
            WORKER_DEVICE_MEMORY.labels(self.model).set(device_bytes)

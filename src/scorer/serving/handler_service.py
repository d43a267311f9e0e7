"""The Multi Model Server handler: MMS imports this module in each model worker process.

MMS calls ``handle(None, context)`` once when the worker loads its model, then
``handle(batch, context)`` per request batch. This module hands the batch to the model's
:class:`scorer.inference.batching.Batcher` (one forward pass for the images of all its
requests, over :class:`scorer.inference.chain.Chain`), which answers each request with a
response or an error, and maps errors to status codes once:

* :class:`ScorerError` -> its 4xx/5xx status with a JSON ``{"code", "type", "message"}``;
* host or CUDA out-of-memory -> 507 (load and invoke), as SageMaker's multi-model
  contract expects (MMS itself maps only ``MemoryError``);
* a batch still running after ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds -> 504 for each
  of its requests, and a load still running after ``SCORER_MODEL_LOAD_TIMEOUT`` seconds
  fails with that reason (:mod:`scorer.serving.bounded`);
* anything else -> 500 with a generic message and the request id; the traceback goes to
  the log, never to the client.

Each answered request is counted and logged as one JSON line (``{"event": "request",
"request_id", "model", "status", "ms", "batch_size"}``); the chain's stages, forward batch
sizes and loads go to :mod:`scorer.metrics.worker` (Prometheus, summed across workers).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scorer.config import ServerConfig, load_config
from scorer.errors import (
    DeadlineExceededError,
    InsufficientMemoryError,
    InvalidLoadRequestError,
    ModelLoadError,
    RequestTimeoutError,
    ScorerError,
)
from scorer.events import log_event
from scorer.inference.batching import Batcher, BatchRequest, Forward, ForwardThreads, Outcome
from scorer.inference.chain import Chain, Response
from scorer.inference.context import CUSTOM_ATTRIBUTES, MAX_CUSTOM_ATTRIBUTES, RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.inference.user_module import Hook
from scorer.metrics.worker import ModelMetrics, record_load
from scorer.modelserver import janitor, load_failures
from scorer.modelserver.inflight import InflightCounter
from scorer.serving import requirements
from scorer.serving.bounded import BoundedRunner, call_with_deadline
from scorer.serving.resources import (
    choose_forward_threads,
    configure_threads,
    limit_memory,
    memory_limit_bytes,
    select_device,
    threads_per_worker,
)

logger = logging.getLogger("scorer.worker")

SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_OOM_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)
WEDGED_EXIT_CODE = 75  # the worker exits after replying when two requests overran
WEDGED_EXIT_DELAY_SECONDS = 0.5  # time for MMS to send the reply first


def _remove_crlf(text: str) -> str:
    """Netty rejects CR/LF in status phrases and header values."""
    return text.replace("\r", " ").replace("\n", " ")


class _StageTotals:
    """Seconds spent in each stage (decode, forward, encode) since the last :meth:`take`,
    for the request log line; the image pool decodes on other threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}

    def observer(self, stage: str, also: Callable[[float], None]) -> Callable[[float], None]:
        """What records one duration of ``stage`` here and in ``also`` (the histogram)."""

        def observe(seconds: float) -> None:
            also(seconds)
            with self._lock:
                self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

        return observe

    def take(self) -> dict[str, float]:
        """The totals in ms since the last call (one batch's), and start again."""
        with self._lock:
            taken, self._seconds = self._seconds, {}
        return {stage: round(seconds * 1000, 1) for stage, seconds in sorted(taken.items())}


def _timed(hook: Hook, observe: Callable[[float], None]) -> Hook:
    """``hook``, with each call's duration (seconds) given to ``observe``."""

    def run(*args: Any, context: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return hook(*args, context=context)
        finally:
            observe(time.perf_counter() - started)

    return Hook(fn=run, takes_context=True, context_by_keyword=True)


def _time_stages(chain: Chain, metrics: ModelMetrics, totals: _StageTotals) -> None:
    """Time the chain's hooks as the decode, forward and encode stages (the chain and the
    batcher call them; neither knows of metrics) into the histograms and ``totals``."""

    def observer(stage: str) -> Callable[[float], None]:
        return totals.observer(stage, metrics.stage_observer(stage))

    chain.input_fn = _timed(chain.input_fn, observer("decode"))
    chain.predict_fn = _timed(chain.predict_fn, observer("forward"))
    chain.output_fn = _timed(chain.output_fn, observer("encode"))
    batch_predict = chain.batch_predict_fn
    if batch_predict is not None:
        observe = observer("forward")

        def timed_batch(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return batch_predict(*args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        chain.batch_predict_fn = timed_batch


class HandlerService:
    """One model in one MMS worker process: its chain, device and thread budget."""

    def __init__(self, config: ServerConfig, model_name: str, model_dir: Path, gpu_id: Any):
        self.config = config
        self.model_name = model_name
        self.model_dir = model_dir
        self.device = select_device(
            config.device, None if gpu_id is None else int(gpu_id), config.gpu_placement
        )
        self.chain: Chain | None = None
        self.runner = BoundedRunner()
        self.batcher: Batcher | None = None  # the chain's, made on the first request
        self.forward_threads: ForwardThreads | None = None  # None: torch's count throughout
        self.inflight: InflightCounter | None = None
        self.metrics: ModelMetrics | None = None  # once the model is loaded
        self.stages = _StageTotals()  # each batch's stage times, for its request lines

    def check_model_dir(self) -> None:
        """In multi-model mode, only safe names and directories under the models root load.

        Anything else is the caller's error: :class:`InvalidLoadRequestError` (400).
        """
        if not self.config.multi_model:
            return
        if not SAFE_MODEL_NAME.match(self.model_name):
            raise InvalidLoadRequestError(
                f"model name {self.model_name!r} is not a safe identifier "
                "(letters, digits, '_', '-', '.'; at most 128 characters)"
            )
        root = self.config.models_root.resolve()
        if not self.model_dir.resolve().is_relative_to(root):
            raise InvalidLoadRequestError(
                f"model url {self.model_dir} is outside the models root {root} "
                f"(set SCORER_MODELS_ROOT to change it)"
            )

    def initialize(self) -> None:
        """Install the model's requirements, import its code and call ``model_fn``."""
        started = time.monotonic()
        self.check_model_dir()
        memory_limit = memory_limit_bytes(self.config.worker_memory_limit, self.device.type)
        limit_memory(memory_limit)
        workers = self.config.workers or 1
        pool = configure_threads(threads_per_worker(self.config.threads_per_worker, workers))
        code_dir = self.model_dir / "code"
        if self.config.install_requirements:
            site = requirements.install_requirements(
                code_dir, self.config.packages_dir, self.config.pip_args
            )
            requirements.activate(site)
        defaults = CreativeScoringDefaults(
            self.device,
            allow_pickle=self.config.allow_pickle,
            model_name=self.model_name,
            pool=pool,
            log_format=self.config.log_format,
        )
        chain = Chain.for_model_dir(
            self.model_dir,
            defaults,
            program=self.config.program,
            default_accept=self.config.default_accept,
        )
        chain.load(self.model_dir)
        threads_probe = self._choose_threads(chain, defaults)
        self.metrics = ModelMetrics(self.model_name)
        _time_stages(chain, self.metrics, self.stages)
        self.chain = chain
        self.inflight = InflightCounter(self.config.inflight_dir)
        self.metrics.loaded(self._device_bytes())
        log_event(
            logger,
            "model_loaded",
            self.config.log_format,
            model=self.model_name,
            device=str(self.device),
            threads=torch.get_num_threads(),
            memory_limit_mb=None if memory_limit is None else memory_limit >> 20,
            user_hooks=chain.customised,
            ms=round((time.monotonic() - started) * 1000, 1),
            pid=os.getpid(),
            **threads_probe,
        )

    def _choose_threads(self, chain: Chain, defaults: CreativeScoringDefaults) -> dict[str, Any]:
        """On the CPU, with no thread count configured: one thread for the one-image
        forward passes of a model whose threads do not speed them up
        (:func:`choose_forward_threads`; :attr:`forward_threads` for the batcher); what
        was measured, for the ``model_loaded`` line."""
        self.forward_threads = None
        forward = defaults.one_image_forward(chain.model)
        if self.device.type != "cpu" or self.config.threads_per_worker is not None or not forward:
            return {}
        budget = torch.get_num_threads()
        one_image, measured = choose_forward_threads(forward, budget, chain.warm_up_ms)
        if one_image != budget:
            self.forward_threads = ForwardThreads(one_image=one_image, batch=budget)
        return {**measured, "one_image_threads": one_image} if measured else {}

    def _request_context(self, mms_context: Any, idx: int) -> RequestContext:
        raw = mms_context.get_all_request_header(idx) or {}
        headers = {str(k).lower(): v for k, v in raw.items() if isinstance(v, str)}
        content_type = headers.get("content-type", "")
        if not content_type:
            body_meta = raw.get("body")
            if isinstance(body_meta, dict):
                content_type = body_meta.get("content-type", "") or ""
        # MMS's Context.get_request_id is (by mistake) a property; read the map instead.
        request_id = (getattr(mms_context, "request_ids", None) or {}).get(idx, "")
        return RequestContext(
            model_name=self.model_name,
            content_type=content_type,
            accept=headers.get("accept", ""),
            headers=headers,
            request_id=str(request_id),
        )

    def _error(self, mms_context: Any, idx: int, error: ScorerError, request_id: str) -> bytes:
        body = error.to_dict()
        if request_id:
            body["request_id"] = request_id
        mms_context.set_response_status(
            int(error.status_code), _remove_crlf(error.message)[:200], idx
        )
        mms_context.set_response_content_type(idx, "application/json")
        return json.dumps(body).encode()

    def handle(self, batch: list[dict[str, Any]], mms_context: Any) -> list[bytes]:
        """Score an MMS batch; one response (or error body) per request, in order."""
        if self.inflight is None:
            return self._handle(batch, mms_context)
        with self.inflight.serving(len(batch)):
            return self._handle(batch, mms_context)

    def _answered(
        self,
        requests: list[BatchRequest],
        replies: list[tuple[int, bytes]],
        started: float,
        forwards: list[Forward],
    ) -> None:
        """Count and log each answered request (one line each: docs/observability.md);
        record the batch's forward sizes."""
        seconds = time.monotonic() - started
        ms = round(seconds * 1000, 1)
        stages = self.stages.take()  # the batch's, shared by its requests
        for request, (status, body) in zip(requests, replies, strict=True):
            if self.metrics is not None:
                self.metrics.request(status, seconds)
            ctx = request.context
            log_event(logger, "request", self.config.log_format, request_id=ctx.request_id,
                      model=self.model_name, status=status, ms=ms, batch_size=len(requests),
                      stages_ms=stages, content_type=ctx.content_type, accept=ctx.accept,
                      bytes_in=len(request.body), bytes_out=len(body))  # fmt: skip
        if self.metrics is not None:
            for forward in forwards:
                self.metrics.forward(len(forward.requests))
            self.metrics.sample_memory(self._device_bytes())

    def _device_bytes(self) -> int | None:
        """GPU memory torch holds in this worker (one model per worker), or None on the CPU."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.memory_allocated(self.device))

    def _handle(self, batch: list[dict[str, Any]], mms_context: Any) -> list[bytes]:
        """The batch through :class:`Batcher` under one deadline; each outcome mapped to its
        index of MMS's context (status, content type, custom attributes) and a body."""
        assert self.chain is not None
        started = time.monotonic()
        if self.batcher is None or self.batcher.chain is not self.chain:
            self.batcher = Batcher(
                self.chain, log_format=self.config.log_format, threads=self.forward_threads
            )
        requests = [
            BatchRequest(_body(item), self._request_context(mms_context, idx))
            for idx, item in enumerate(batch)
        ]
        outcomes: list[Outcome]
        timed_out = False
        try:
            outcomes = self.runner.run(
                functools.partial(self.batcher.run, requests), self.config.timeout_seconds
            )
        except DeadlineExceededError:
            logger.error("requests %s: no answer within %s s",
                         ", ".join(r.context.request_id for r in requests),
                         self.config.timeout_seconds)  # fmt: skip
            late = RequestTimeoutError(
                f"model {self.model_name} did not answer within "
                f"{self.config.timeout_seconds} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)"
            )
            outcomes = [late] * len(requests)
            timed_out = True
        except Exception as exc:  # the batcher answers per request; this is a bug in it
            logger.exception("batch of %d requests: unexpected error", len(requests))
            outcomes = [exc] * len(requests)
        replies = [
            self._reply(mms_context, idx, request.context, outcome)
            for idx, (request, outcome) in enumerate(zip(requests, outcomes, strict=True))
        ]
        # a batch past its deadline may still run: its forwards are not known yet
        forwards = [] if timed_out else list(self.batcher.last_forwards)
        self._answered(requests, replies, started, forwards)
        responses = [body for _, body in replies]
        if self.runner.wedged:
            _exit_after_reply(self.model_name)
        return responses

    def _reply(
        self, mms_context: Any, idx: int, ctx: RequestContext, outcome: Outcome
    ) -> tuple[int, bytes]:
        """One request's outcome as MMS's response at ``idx``: its status and the body, or
        an error's."""
        if isinstance(outcome, Response):
            mms_context.set_response_content_type(idx, outcome.content_type)
            if ctx.response_custom_attributes:
                value = _remove_crlf(ctx.response_custom_attributes)[:MAX_CUSTOM_ATTRIBUTES]
                mms_context.set_response_header(idx, CUSTOM_ATTRIBUTES, value)
            return 200, outcome.body
        if isinstance(outcome, RequestTimeoutError):
            error: ScorerError = outcome
        elif isinstance(outcome, ScorerError):
            level = logging.WARNING if outcome.status_code < 500 else logging.ERROR
            logger.log(level, "request %s: %s %s", ctx.request_id, outcome.status_code,
                       outcome.message)  # fmt: skip
            error = outcome
        elif isinstance(outcome, _OOM_ERRORS):
            logger.error("request %s: out of memory", ctx.request_id, exc_info=outcome)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            error = InsufficientMemoryError(
                f"model {self.model_name} ran out of memory scoring this request"
            )
        else:
            logger.error("request %s: unexpected error in the chain", ctx.request_id,
                         exc_info=outcome)  # fmt: skip
            error = ScorerError(
                f"internal error while scoring with model {self.model_name}; "
                "see the model server log"
            )
        return int(error.status_code), self._error(mms_context, idx, error, ctx.request_id)


def _body(item: dict[str, Any]) -> bytes:
    """A request's body from MMS's input dict (``body``, else its first bytes value)."""
    body = item.get("body")
    if body is None:
        body = next((v for v in item.values() if isinstance(v, (bytes, bytearray))), b"")
    if isinstance(body, str):
        body = body.encode()
    return bytes(body)


def _exit_after_reply(model_name: str) -> None:
    """End this worker shortly after MMS sends the reply; MMS then starts a fresh one."""
    logger.error(
        "model %s: two requests overran the timeout and still run; restarting the worker",
        model_name,
    )
    timer = threading.Timer(WEDGED_EXIT_DELAY_SECONDS, os._exit, args=(WEDGED_EXIT_CODE,))
    timer.daemon = True
    timer.start()


_service: HandlerService | None = None
_LOAD_OUTCOMES = {504: "timeout", 507: "out_of_memory"}  # a failed load's status -> outcome


def _where_in_model(exc: BaseException, model_dir: Path) -> str | None:
    """Where in the model's own files a load failure arose, e.g. ``code/inference.py, line
    7``: a syntax error's position, else the innermost traceback frame in a file under
    ``model_dir``, following the exception's cause and context (a ``UserCodeError`` keeps
    the import's error there); None when no file of the model is involved."""
    roots = (model_dir, model_dir.resolve())

    def relative(filename: str | None) -> str | None:
        path = Path(filename or "")
        for root in roots:
            if path.is_absolute() and path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return None

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SyntaxError) and current.lineno:
            where = relative(current.filename)
            if where:
                return f"{where}, line {current.lineno}"
        for frame in reversed(traceback.extract_tb(current.__traceback__)):
            where = relative(frame.filename)
            if where:
                return f"{where}, line {frame.lineno}"
        current = current.__cause__ or current.__context__
    return None


def _with_location(message: str, exc: BaseException, model_dir: Path) -> str:
    """``message``, then where in the model's files the failure arose (if it did)."""
    where = _where_in_model(exc, model_dir)
    return f"{message[:900]}; at {where}" if where else message


def _load_failed(
    config: ServerConfig,
    model_name: str,
    status: int,
    message: str,
    public: bool = True,
    error_type: str = "ModelLoadError",
) -> None:
    log_event(logger, "model_load_failed", config.log_format, model=model_name, status=status,
              error=message)  # fmt: skip
    record_load(model_name, _LOAD_OUTCOMES.get(status, "error"))
    try:
        load_failures.record(
            config.load_failures_dir, model_name, status, message, public, error_type
        )
    except OSError:
        logger.exception("cannot record the load failure of %s", model_name)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """MMS entry point (``default_service_handler=scorer.serving.handler_service:handle``)."""
    global _service
    if data is None:
        if _service is not None and _service.chain is not None:
            return None
        props = context.system_properties
        model_dir = Path(props.get("model_dir"))
        model_name = context.model_name if hasattr(context, "model_name") else model_dir.name
        config = load_config()
        started = time.monotonic()
        try:
            service = HandlerService(config, model_name, model_dir, props.get("gpu_id"))
            call_with_deadline(service.initialize, config.load_timeout_seconds, name="scorer-load")
        except DeadlineExceededError:
            message = (
                f"model {model_name} did not load within {config.load_timeout_seconds} s "
                "(SCORER_MODEL_LOAD_TIMEOUT)"
            )
            _load_failed(config, model_name, 504, message, error_type="ModelLoadTimeout")
            raise ModelLoadError(message) from None
        except _OOM_ERRORS as exc:
            message = f"out of memory loading {model_name}: {exc}"
            _load_failed(config, model_name, 507, message, error_type="InsufficientMemoryError")
            if config.multi_model:
                janitor.start(config.port, model_name)  # MMS keeps a 507 model registered
            raise MemoryError(f"out of memory loading {model_name}") from None
        except ScorerError as exc:
            status = int(exc.status_code)
            message = _with_location(exc.message, exc, model_dir)
            _load_failed(config, model_name, status, message, error_type=type(exc).__name__)
            raise
        except Exception as exc:
            logger.exception("loading model %s failed", model_name)
            message = _with_location(f"{type(exc).__name__}: {exc}", exc, model_dir)
            _load_failed(config, model_name, 500, message, False, type(exc).__name__)
            raise
        load_failures.clear(config.load_failures_dir, model_name)
        record_load(model_name, "success", time.monotonic() - started)
        _service = service
        return None
    if _service is None:
        raise RuntimeError("handle() called before the model was loaded")
    return _service.handle(data, context)

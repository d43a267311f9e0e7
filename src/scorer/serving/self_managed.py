"""Running the self-managed multi-model mode: MMS inside, the gateway outside.

``scorer serve`` with ``SCORER_MODEL_PREFIX`` set starts Multi Model Server in multi-model
mode on an internal loopback port (the low end of ``SAGEMAKER_SAFE_PORT_RANGE`` when
SageMaker gives one, else a free port), with its models root at the cache dir, and serves
the gateway on ``SAGEMAKER_BIND_TO_PORT``. SIGTERM makes uvicorn finish in-flight requests
before MMS is stopped. If MMS dies it is restarted on the same port; the gateway then
reloads models on their next request (the model server answers 404 for a model it lost).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from scorer import config as cfg
from scorer.cache.budgets import GPU_MEMORY, Budget
from scorer.cache.cache import ModelCache
from scorer.cache.settings import load_cache_settings
from scorer.errors import ModelServerStartError, ScorerError
from scorer.frontend.backend import ModelServerEndpoint
from scorer.metrics.emf import emf_settings
from scorer.modelserver.gpu import GpuMemoryMeter, total_gpu_memory
from scorer.modelserver.healing import WorkerWatch
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer
from scorer.modelserver.start import internal_config, start_model_server
from scorer.serving.gateway import create_gateway_app, load_gateway_settings

logger = logging.getLogger("scorer.self_managed")
INVOKE_MARGIN_SECONDS = 5  # the worker answers 504 at the timeout; wait for that answer


def internal_port(config: cfg.ServerConfig) -> int:
    """The model server's loopback port: the safe range's first free port, or any below 32768."""
    if config.safe_port_range is None:
        return free_loopback_port(exclude={config.port})
    low, high = config.safe_port_range
    return free_loopback_port(range(low, high + 1), exclude={config.port})


def gpu_budget(fraction: float, server_pid: int) -> Budget | None:
    """A budget of ``fraction`` of the GPUs' memory, or None on a machine without GPUs."""
    total = total_gpu_memory()
    if not total:
        return None
    return Budget(GPU_MEMORY, int(total * fraction), GpuMemoryMeter(server_pid))


def _supervise(server: ModelServer, stopping: threading.Event) -> None:
    """Restart the model server on the same port if it exits while serving; re-register a
    model whose worker processes all died (:mod:`scorer.modelserver.healing`)."""
    assert server.process is not None
    watch = WorkerWatch(server.process.pid)
    while not stopping.is_set():
        process = server.process
        if process is not None and process.poll() is not None and not stopping.is_set():
            logger.error("the model server exited with %s; restarting it", process.returncode)
            server.stop(grace=5)
            server.start()
            with contextlib.suppress(ModelServerStartError):
                server.wait_ready()
            assert server.process is not None
            watch = WorkerWatch(server.process.pid)
        elif not stopping.is_set():
            with contextlib.suppress(ScorerError, ValueError, KeyError):
                server.check_models(watch)
        stopping.wait(2.0)


def serve_self_managed(environ: Mapping[str, str], bind_address: str = "0.0.0.0") -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    config = cfg.load_config(environ)
    cache_settings = load_cache_settings(environ)
    gateway_settings = load_gateway_settings(
        environ, config.max_request_size, float(config.timeout_seconds + INVOKE_MARGIN_SECONDS)
    )
    cache_dir = Path(cache_settings.cache_dir).absolute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    internal = internal_config(
        config,
        port=internal_port(config),
        run_dir=config.run_dir / "model-server",
        models_root=cache_dir,
    )
    server, registry = start_model_server(internal, environ)
    stopping = threading.Event()
    try:
        assert server.process is not None
        budgets = []
        if cache_settings.gpu_memory_fraction:
            budget = gpu_budget(cache_settings.gpu_memory_fraction, server.process.pid)
            if budget is None:
                logger.warning("no GPU found: the GPU memory budget is not enforced")
            else:
                budgets.append(budget)
        cache = ModelCache.from_settings(cache_settings, registry, budgets=budgets)
        endpoint = ModelServerEndpoint(
            server.url, log_hint=str(internal.log_dir), metrics_dir=internal.metrics_dir
        )
        app = create_gateway_app(gateway_settings, endpoint, cache, emf_settings(config))
        watchdog = threading.Thread(target=_supervise, args=(server, stopping), daemon=True)
        watchdog.start()
        logger.info(
            "self-managed multi-model mode: models from %s, gateway on %s:%d, model server %s",
            cache_settings.model_prefix, bind_address, config.port, server.url,
        )  # fmt: skip
        front = uvicorn.Server(
            uvicorn.Config(
                app,
                host=bind_address,
                port=config.port,
                log_level="warning",
                timeout_graceful_shutdown=25,
                access_log=False,
            )
        )

        def _on_signal(_signum: int, _frame: object) -> None:
            # uvicorn handles SIGTERM/SIGINT while it serves (finishing in-flight requests)
            # and raises the signal again afterwards; with this handler installed that
            # re-raise only asks it to stop, so the model server is stopped below instead
            # of the process dying with it still running.
            front.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)
        front.run()
        return 0
    finally:
        stopping.set()
        server.stop(grace=10)

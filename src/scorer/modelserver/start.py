"""Starting a model server behind a front end: one way, for the emulator and the gateway.

Both front ends that put MMS behind themselves (the local SageMaker Runtime emulator and
the container's self-managed multi-model mode) derive the internal server's configuration
from their own with :func:`internal_config` (a ``dataclasses.replace``, never a rewritten
environment), then call :func:`start_model_server`, which returns the running server and
the model registry the cache loads models through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from scorer.config import ServerConfig
from scorer.modelserver.process import ModelServer
from scorer.modelserver.properties import backstop_timeout
from scorer.modelserver.registry import MmsModelRegistry


def internal_config(
    config: ServerConfig,
    *,
    port: int,
    run_dir: Path,
    models_root: Path,
    multi_model: bool = True,
    model_dir: Path | None = None,
) -> ServerConfig:
    """``config`` for a model server on an internal ``port`` with its own ``run_dir``."""
    return replace(
        config,
        multi_model=multi_model,
        port=port,
        run_dir=run_dir,
        mms_config_path=run_dir / "mms.properties",
        models_root=models_root,
        model_dir=model_dir if model_dir is not None else config.model_dir,
    )


def start_model_server(
    config: ServerConfig,
    environ: Mapping[str, str] | None = None,
    *,
    bind_address: str = "127.0.0.1",
    startup_timeout: float | None = None,
) -> tuple[ModelServer, MmsModelRegistry]:
    """Start MMS for ``config`` and wait until it is ready; stopped again if it is not.

    Args:
        config: the server's configuration (see :func:`internal_config`).
        environ: what MMS and its workers inherit besides the configuration.
        bind_address: the address MMS listens on (loopback behind a front end).
        startup_timeout: seconds to wait for readiness (default: the configured one).

    Returns:
        The running server and a registry over its management API.

    Raises:
        ModelServerStartError: MMS exited or did not become ready in time.
    """
    server = ModelServer(config, environ, bind_address)
    server.start()
    try:
        server.wait_ready(startup_timeout)
    except BaseException:
        server.stop(grace=10)
        raise
    assert server.process is not None
    registry = MmsModelRegistry(
        server.client(),
        server_pid=server.process.pid,
        log_hint=str(config.log_dir),
        load_timeout_s=float(backstop_timeout(config)),
        load_failures_dir=config.load_failures_dir,
    )
    return server, registry

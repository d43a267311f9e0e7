"""Starting Multi Model Server the way SageMaker expects, from a :class:`ServerConfig`.

What the sagemaker-inference toolkit's ``model_server.start_model_server`` does, with its
known problems fixed: every path (config file, temp dir with MMS's pid file, logs) comes
from the configuration instead of ``/etc`` and ``/tmp``, so several servers can run on one
machine and a normal user can run one; the response timeout is written in seconds
(``default_response_timeout_seconds``; the toolkit writes minutes, #99); single-model mode
serves ``/opt/ml/model`` directly (no ``model-archiver`` round trip into ``/.sagemaker``);
SIGTERM stops MMS within SageMaker's 30 s grace period instead of being ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from scorer.config import ServerConfig, load_config
from scorer.serving.inflight import drain
from scorer.serving.resources import cpu_count
from scorer.serving.zygote import write_launcher

logger = logging.getLogger(__name__)

HANDLER = "scorer.serving.handler_service:handle"
SINGLE_MODEL_NAME = "model"
CONTAINER_DIR = Path(__file__).resolve().parents[3] / "container"
PLUGINS_DIR_ENV = "SCORER_MMS_PLUGINS"
LOG_CONFIG_ENV = "SCORER_MMS_LOG_CONFIG"
STOP_GRACE_SECONDS = 25.0
DRAIN_SECONDS = 15.0  # of SageMaker's 30 s between SIGTERM and SIGKILL; the rest is the stop
# MMS's own reply timeout is a backstop behind scorer's per-load and per-request bounds,
# which the worker enforces itself (clear errors); MMS only acts if the worker is stuck.
BACKSTOP_MARGIN_SECONDS = 30


def backstop_timeout(config: ServerConfig) -> int:
    """MMS's ``default_response_timeout_seconds``: after both of scorer's own bounds."""
    return max(config.load_timeout_seconds, config.timeout_seconds) + BACKSTOP_MARGIN_SECONDS


def worker_count(config: ServerConfig) -> int:
    """Workers per model: the configured number, else 1 (one model copy per GPU/host)."""
    return config.workers or 1


def properties(config: ServerConfig, bind_address: str = "0.0.0.0") -> dict[str, str]:
    """The MMS configuration properties for ``config``."""
    address = f"http://{bind_address}:{config.port}"
    props = {
        "inference_address": address,
        "management_address": address,
        "model_store": "/",
        "default_service_handler": HANDLER,
        "default_workers_per_model": str(worker_count(config)),
        "default_response_timeout_seconds": str(backstop_timeout(config)),
        "unregister_model_timeout": "360",
        "max_request_size": str(config.max_request_size),
        "max_response_size": str(max(config.max_request_size, 6 * 1024 * 1024)),
        "decode_input_request": "false",
        "enable_envvars_config": "true",
        "job_queue_size": "100",
        "number_of_netty_threads": str(max(2, cpu_count())),
        "async_logging": "true",
        "preload_model": "false",
        "vmargs": config.vmargs,
        # read by scorer's MMS plugins (container/mms-plugins)
        "scorer_multi_model": str(config.multi_model).lower(),
        "scorer_max_concurrent_transforms": str(config.max_concurrent_transforms),
        "scorer_max_payload_in_mb": str(config.max_payload_in_mb),
        "scorer_batch_strategy": config.batch_strategy,
        "scorer_load_failures_dir": str(config.load_failures_dir),
    }
    if not config.multi_model:
        props["load_models"] = f"{SINGLE_MODEL_NAME}={config.model_dir}"
    plugins = os.environ.get(PLUGINS_DIR_ENV) or str(CONTAINER_DIR / "mms-plugins" / "build")
    if Path(plugins).is_dir() and any(Path(plugins).glob("*.jar")):
        props["plugins_path"] = plugins
    return props


def write_properties(config: ServerConfig, bind_address: str = "0.0.0.0") -> Path:
    """Write the MMS properties file to ``config.mms_config_path``."""
    path = config.mms_config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={value}" for key, value in properties(config, bind_address).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _mms_executable() -> str:
    candidate = Path(sys.executable).parent / "multi-model-server"
    return str(candidate) if candidate.exists() else "multi-model-server"


def command(config: ServerConfig, zygote_address: str | None = None) -> list[str]:
    """The command line that starts MMS in the foreground.

    With ``zygote_address``, MMS is started by scorer's worker zygote
    (:mod:`scorer.serving.zygote`) and told to use its launcher as "python", so model
    workers are forked from a process that has torch and scorer imported already.
    """
    cmd = [
        _mms_executable(), "--start", "--foreground",
        "--mms-config", str(config.mms_config_path), "--model-store", "/",
    ]  # fmt: skip
    log_config = os.environ.get(LOG_CONFIG_ENV) or str(CONTAINER_DIR / "log4j2.xml")
    if Path(log_config).is_file():
        cmd += ["--log-config", log_config]
    if zygote_address is None:
        return cmd
    # MMS passes its front-end's sys.executable to Java as the workers' python.
    front_end = (
        "import sys; from mms.model_server import start; "
        "sys.executable = sys.argv.pop(1); sys.exit(start())"
    )
    mms = [sys.executable, "-c", front_end, str(launcher_path(config)), *cmd[1:]]
    return [sys.executable, "-m", "scorer.serving.zygote", "--address", zygote_address, "--", *mms]


def launcher_path(config: ServerConfig) -> Path:
    """Where the worker launcher MMS runs as its "python" is written."""
    return config.run_dir / "bin" / "scorer-worker-python"


def environment(config: ServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MMS process environment: its own temp dir (pid file) and log location."""
    env = dict(os.environ if base is None else base)
    env["TEMP"] = str(config.mms_tmp_dir)
    env["TMPDIR"] = str(config.mms_tmp_dir)
    env["LOG_LOCATION"] = str(config.log_dir)
    env["METRICS_LOCATION"] = str(config.log_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ModelServer:
    """A running MMS process started from a configuration."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        bind_address: str = "0.0.0.0",
    ) -> None:
        """Read the configuration from ``environ`` (default ``os.environ``).

        The workers MMS starts read the same mapping, so pass every ``SAGEMAKER_*`` and
        ``SCORER_*`` setting through it.
        """
        self.environ = dict(os.environ if environ is None else environ)
        self.config: ServerConfig = load_config(self.environ)
        self.bind_address = bind_address
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL clients use (loopback when bound to all interfaces)."""
        host = "127.0.0.1" if self.bind_address in {"0.0.0.0", "::"} else self.bind_address
        return f"http://{host}:{self.config.port}"

    def start(self, output: Path | None = None) -> None:
        """Write the configuration and start MMS (returns without waiting for readiness).

        Args:
            output: a file for MMS's stdout/stderr; default: inherit this process's.
        """
        for folder in (self.config.mms_tmp_dir, self.config.log_dir, self.config.packages_dir):
            folder.mkdir(parents=True, exist_ok=True)
        write_properties(self.config, self.bind_address)
        address = None
        if self.config.worker_zygote:
            address = f"scorer-zygote-{os.getpid()}-{secrets.token_hex(6)}"
            launcher = write_launcher(launcher_path(self.config), sys.executable, address)
            if not os.access(launcher, os.X_OK):  # e.g. a noexec run dir: plain MMS workers
                logger.warning("cannot execute %s; model workers start without the zygote",
                               launcher)  # fmt: skip
                address = None
        logger.info("starting Multi Model Server on %s", self.url)
        sink = open(output, "ab") if output is not None else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command(self.config, address),
                env=environment(self.config, self.environ),
                cwd=str(self.config.run_dir),
                start_new_session=True,
                stdout=sink,
                stderr=subprocess.STDOUT if sink is not None else None,
            )
        finally:
            if sink is not None:
                sink.close()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until ``/ping`` answers (and, single-model, the model is registered).

        Raises:
            RuntimeError: MMS exited or did not become ready in time.
        """
        deadline = time.monotonic() + (timeout or self.config.startup_timeout_seconds)
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"Multi Model Server exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    pinged = client.get(f"{self.url}/ping").status_code == 200
                    if pinged and (self.config.multi_model or self._single_model_ready(client)):
                        return
                time.sleep(0.2)
        raise RuntimeError(f"Multi Model Server not ready on {self.url} in time")

    def _single_model_ready(self, client: httpx.Client) -> bool:
        response = client.get(f"{self.url}/models/{SINGLE_MODEL_NAME}")
        return response.status_code == 200

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Stop MMS and its workers: SIGTERM to the process group, SIGKILL after ``grace``."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # orphaned workers, if any
            return self.process.returncode
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return self.process.wait()
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def loaded_models(self) -> dict[str, str]:
        """``{model name: model url}`` as MMS lists them now (all pages)."""
        models: dict[str, str] = {}
        token: str | None = None
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while True:
                params = {"limit": "100", **({"next_page_token": token} if token else {})}
                body = client.get("/models", params=params).json()
                for entry in body.get("models", []):
                    models[entry["modelName"]] = entry["modelUrl"]
                token = body.get("nextPageToken")
                if not token:
                    return models

    def restore(self, models: Mapping[str, str]) -> None:
        """Register ``models`` again (after a restart); failures are logged, not raised."""
        timeout = float(backstop_timeout(self.config))
        with httpx.Client(base_url=self.url, timeout=timeout) as client:
            for name, url in models.items():
                try:
                    status = client.post(
                        "/models", json={"model_name": name, "url": url}
                    ).status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                logger.info("restored model %s after restart: %s", name, status)

    def serve_forever(self, poll_seconds: float = 2.0, max_restarts: int = 5) -> int:
        """Run MMS until SIGTERM/SIGINT; restart it if it dies, restoring its models.

        SIGTERM/SIGINT let the requests in flight finish (at most ``DRAIN_SECONDS``), then
        stop MMS within the rest of SageMaker's 30 s. An unexpected exit is restarted
        and the multi-model endpoint's loaded models are registered again; more than
        ``max_restarts`` exits in 10 minutes end the process (SageMaker then replaces it).
        """
        stopping = False

        def _terminate(signum: int, _frame: object) -> None:
            nonlocal stopping
            if stopping:
                return
            stopping = True
            logger.info("received signal %d: draining in-flight requests", signum)
            drained = drain(self.config.inflight_dir, DRAIN_SECONDS)
            outcome = "drained" if drained else "requests still in flight after the drain"
            logger.info("%s; stopping the model server", outcome)
            self.stop(grace=STOP_GRACE_SECONDS - DRAIN_SECONDS)

        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        self.start()
        assert self.process is not None
        known: dict[str, str] = {}
        restarts: list[float] = []
        while True:
            try:
                code = self.process.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                if self.config.multi_model:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        known = self.loaded_models()
                continue
            if stopping:
                return 0  # a stop we were asked for is a clean exit
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 600] + [now]
            logger.error("Multi Model Server exited unexpectedly with %s", code)
            if len(restarts) > max_restarts:
                logger.error("too many restarts; exiting so the platform replaces the container")
                return code or 1
            self.stop(grace=5)  # reap any workers left in its process group
            self.start()
            try:
                self.wait_ready()
            except RuntimeError:
                logger.exception("the restarted model server did not become ready")
                continue
            self.restore(known)

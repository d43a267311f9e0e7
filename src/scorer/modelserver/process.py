"""The Multi Model Server process: started the way SageMaker expects, from a :class:`ServerConfig`.

What the sagemaker-inference toolkit's ``model_server.start_model_server`` does, with its
known problems fixed: every path (config file, temp dir with MMS's pid file, logs) comes
from the configuration instead of ``/etc`` and ``/tmp``, so several servers can run on one
machine and a normal user can run one; SIGTERM drains and stops MMS within SageMaker's
30 s grace period instead of being ignored. The configuration is read once, by the caller;
MMS and its workers get it through :func:`scorer.config.to_environ`, never re-derived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from scorer.config import PROMETHEUS_MULTIPROC_DIR, ServerConfig, load_config, to_environ
from scorer.errors import ModelServerStartError, ScorerError
from scorer.metrics import multiprocess as worker_metrics
from scorer.metrics.emf import emf_settings, start_reporter
from scorer.metrics.server import MetricsServer
from scorer.modelserver import load_failures
from scorer.modelserver.client import ModelServerClient
from scorer.modelserver.healing import WorkerWatch
from scorer.modelserver.inflight import drain
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.properties import (
    SINGLE_MODEL_NAME,
    backstop_timeout,
    log_config,
    write_properties,
)
from scorer.modelserver.zygote import write_launcher

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 25.0
DRAIN_SECONDS = 15.0  # of SageMaker's 30 s between SIGTERM and SIGKILL; the rest is the stop
REAP_GRACE_SECONDS = 3.0  # after MMS exits, for the rest of its group to follow the SIGTERM


def _empty_group(group: int, grace: float) -> None:
    """Wait up to ``grace`` s for process group ``group`` to be gone, then SIGKILL what is left."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # pragma: no cover - a member changed user: not ours to kill
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _mms_executable() -> str:
    candidate = Path(sys.executable).parent / "multi-model-server"
    return str(candidate) if candidate.exists() else "multi-model-server"


def command(
    config: ServerConfig, zygote_address: str | None = None, parent: int | None = None
) -> list[str]:
    """The command line that starts MMS in the foreground.

    With ``zygote_address``, MMS is started by scorer's worker zygote
    (:mod:`scorer.modelserver.zygote`) and told to use its launcher as "python", so model
    workers are forked from a process that has torch and scorer imported already. With
    ``parent`` (scorer's pid), the zygote module leads MMS's process group and kills it if
    that process dies (also without a zygote address: then it only leads).
    """
    cmd = [
        _mms_executable(), "--start", "--foreground",
        "--mms-config", str(config.mms_config_path), "--model-store", "/",
    ]  # fmt: skip
    log4j2 = log_config(config)
    if log4j2 is not None:
        cmd += ["--log-config", str(log4j2)]
    leader = [sys.executable, "-m", "scorer.modelserver.zygote"]
    if parent is not None:
        leader += ["--parent", str(parent)]
    if zygote_address is None:
        return [*leader, "--", *cmd] if parent is not None else cmd
    # MMS passes its front-end's sys.executable to Java as the workers' python.
    front_end = (
        "import sys; from mms.model_server import start; "
        "sys.executable = sys.argv.pop(1); sys.exit(start())"
    )
    mms = [sys.executable, "-c", front_end, str(launcher_path(config)), *cmd[1:]]
    return [*leader, "--address", zygote_address, "--", *mms]


def launcher_path(config: ServerConfig) -> Path:
    """Where the worker launcher MMS runs as its "python" is written."""
    return config.run_dir / "bin" / "scorer-worker-python"


def environment(config: ServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MMS process environment: ``base``, the configuration (read back by the workers),
    its own temp dir (pid file) and log location."""
    env = dict(os.environ if base is None else base)
    env.update(to_environ(config))
    env["TEMP"] = str(config.mms_tmp_dir)
    env["TMPDIR"] = str(config.mms_tmp_dir)
    env["LOG_LOCATION"] = str(config.log_dir)
    env["METRICS_LOCATION"] = str(config.log_dir)
    env[PROMETHEUS_MULTIPROC_DIR] = str(config.metrics_dir)  # the workers' metrics files
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ModelServer:
    """A running MMS process started from a configuration."""

    def __init__(
        self,
        config: ServerConfig,
        environ: Mapping[str, str] | None = None,
        bind_address: str = "0.0.0.0",
    ) -> None:
        """Args:
        config: the server's configuration (read once by the caller).
        environ: the environment MMS and its workers inherit besides the configuration
            (``PATH``, credentials; default ``os.environ``).
        bind_address: the address MMS listens on.
        """
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.bind_address = bind_address
        self.process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self.metrics_url: str | None = None  # the supervisor's metrics server, if it runs
        self._metrics_prepared = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, bind_address: str = "0.0.0.0"
    ) -> ModelServer:
        """A server configured from ``environ`` (default ``os.environ``), read once here."""
        env = dict(os.environ if environ is None else environ)
        return cls(load_config(env), env, bind_address)

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
        if not self._metrics_prepared:  # a restart keeps the counters of the workers so far
            worker_metrics.prepare(self.config.metrics_dir)
            self._metrics_prepared = True
        self.config.metrics_dir.mkdir(parents=True, exist_ok=True)
        write_properties(self.config, self.bind_address, metrics_url=self.metrics_url)
        address = None
        if self.config.worker_zygote:
            address = f"scorer-zygote-{os.getpid()}-{secrets.token_hex(6)}"
            launcher = write_launcher(launcher_path(self.config), sys.executable, address)
            if not os.access(launcher, os.X_OK):  # e.g. a noexec run dir: plain MMS workers
                logger.warning("cannot execute %s; model workers start without the zygote",
                               launcher)  # fmt: skip
                address = None
        logger.info("starting Multi Model Server on %s", self.url)
        self._started_at = time.time()
        sink = open(output, "ab") if output is not None else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command(self.config, address, parent=os.getpid()),
                env=environment(self.config, self.environ),
                cwd=str(self.config.run_dir),
                start_new_session=True,
                stdout=sink,
                stderr=subprocess.STDOUT if sink is not None else None,
            )
        finally:
            if sink is not None:
                sink.close()

    def client(self) -> ModelServerClient:
        """A new client for this server's APIs (the caller closes it)."""
        return ModelServerClient(self.url, invoke_timeout_s=float(self.config.timeout_seconds))

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until ``/ping`` answers (and, single-model, the model is registered).

        Raises:
            ModelServerStartError: MMS exited, did not become ready in time, or (single
                model) the model failed to load.
        """
        asyncio.run(self._wait_ready(timeout or self.config.startup_timeout_seconds))

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise ModelServerStartError(
                        f"Multi Model Server exited with {self.process.returncode}"
                    )
                if await client.ping() == 200 and (
                    self.config.multi_model or await self._single_model_ready(client)
                ):
                    return
                self._raise_if_the_model_failed()
                await asyncio.sleep(0.2)
        raise ModelServerStartError(f"Multi Model Server not ready on {self.url} in {timeout:g} s")

    def _raise_if_the_model_failed(self) -> None:
        """Single-model: a load failure recorded since this start ends the wait at once."""
        if self.config.multi_model:
            return
        failures = self.config.load_failures_dir
        record = load_failures.read_since(failures, SINGLE_MODEL_NAME, self._started_at)
        if record is None:
            return
        raise ModelServerStartError(
            f"the model in {self.config.model_dir} failed to load: "
            f"{record.get('message', 'see the model server log')} "
            f"(log: {self.config.log_dir})"
        )

    async def _single_model_ready(self, client: ModelServerClient) -> bool:
        with contextlib.suppress(ScorerError):
            return await client.describe(SINGLE_MODEL_NAME) is not None
        return False

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Stop MMS and everything in its process group; nothing is left running.

        SIGTERM to the group; SIGKILL to the group once the leader has exited (or after
        ``grace``) and any member is still there a moment later.
        """
        if self.process is None:
            return None
        group = self.process.pid
        code = self.process.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            try:
                code = self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                code = None
        _empty_group(group, REAP_GRACE_SECONDS if code is not None else 0.0)
        return self.process.wait()

    def _announce(self, on_ready: Callable[[], None]) -> None:
        try:
            self.wait_ready()
        except ModelServerStartError as exc:
            logger.error("the model server did not become ready: %s", exc.message)
            return
        on_ready()

    def loaded_models(self) -> dict[str, str]:
        """``{model name: model url}`` as MMS lists them now (all pages)."""

        async def listed() -> dict[str, str]:
            async with self.client() as client:
                return await client.list_models()

        return asyncio.run(listed())

    def check_models(self, watch: WorkerWatch) -> dict[str, str]:
        """The models MMS holds (name -> url); any whose processes all died is registered
        again (:mod:`scorer.modelserver.healing`)."""

        async def check() -> dict[str, str]:
            async with self.client() as client:
                models = await client.list_models()
                await watch.heal(client, models)
                return models

        return asyncio.run(check())

    def restore(self, models: Mapping[str, str]) -> None:
        """Register ``models`` again (after a restart); failures are logged, not raised."""

        async def register_all() -> None:
            timeout = float(backstop_timeout(self.config))
            async with self.client() as client:
                for name, url in models.items():
                    try:
                        status: object = (await client.register(name, url, timeout)).status_code
                    except ScorerError as exc:
                        status = exc.message
                    logger.info("restored model %s after restart: %s", name, status)

        asyncio.run(register_all())

    def serve_forever(
        self,
        poll_seconds: float = 2.0,
        max_restarts: int = 5,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        """Run MMS until SIGTERM/SIGINT; restart it if it dies, restoring its models.

        SIGTERM/SIGINT let the requests in flight finish (at most ``DRAIN_SECONDS``), then
        stop MMS within the rest of SageMaker's 30 s; the last EMF lines are written then
        (:mod:`scorer.metrics.emf`). An unexpected exit is restarted
        and the multi-model endpoint's loaded models are registered again; more than
        ``max_restarts`` exits in 10 minutes end the process (SageMaker then replaces it).
        ``on_ready`` is called (on another thread) once the first start is ready.
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
        metrics = self.start_metrics_server()
        emf = start_reporter(  # EMF lines on stdout, the rest flushed once MMS has stopped
            emf_settings(self.config),
            worker_metrics.WorkerFilesCollector(self.config.metrics_dir).collect,
        )
        try:
            return self._run(poll_seconds, max_restarts, on_ready, lambda: stopping)
        finally:
            if emf is not None:
                emf.stop()
            if metrics is not None:
                metrics.close()

    def start_metrics_server(self) -> MetricsServer | None:
        """Serve the workers' summed metrics on loopback for MMS's ``/metrics`` plugin (in
        SageMaker's safe port range when it gives one); None if it cannot listen."""
        port = 0
        if self.config.safe_port_range is not None:
            low, high = self.config.safe_port_range
            with contextlib.suppress(RuntimeError):
                port = free_loopback_port(range(high, low - 1, -1), exclude={self.config.port})
        try:
            server = MetricsServer(self.config.metrics_dir, port)
        except OSError as exc:
            logger.warning("metrics server not started (%s); /metrics answers 503", exc)
            return None
        self.metrics_url = server.url
        return server

    def _run(
        self,
        poll_seconds: float,
        max_restarts: int,
        on_ready: Callable[[], None] | None,
        stopping: Callable[[], bool],
    ) -> int:
        """Start MMS, then watch it until a stop (``stopping()``): see :meth:`serve_forever`."""
        self.start()
        assert self.process is not None
        if on_ready is not None:
            threading.Thread(
                target=self._announce, args=(on_ready,), name="scorer-ready", daemon=True
            ).start()
        known: dict[str, str] = {}
        restarts: list[float] = []
        watch = WorkerWatch(self.process.pid)
        while True:
            try:
                code = self.process.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ScorerError, ValueError, KeyError):
                    listed = self.check_models(watch)
                    if self.config.multi_model:
                        known = listed
                continue
            if stopping():
                return 0  # a stop we were asked for is a clean exit
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 600] + [now]
            logger.error("Multi Model Server exited unexpectedly with %s", code)
            if len(restarts) > max_restarts:
                logger.error("too many restarts; exiting so the platform replaces the container")
                return code or 1
            self.stop(grace=5)  # reap any workers left in its process group
            self.start()
            assert self.process is not None
            watch = WorkerWatch(self.process.pid)
            try:
                self.wait_ready()
            except ModelServerStartError as exc:
                logger.error("the restarted model server did not become ready: %s", exc.message)
                continue
            self.restore(known)

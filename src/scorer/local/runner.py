"""Running the emulator: the model server it fronts, the model cache, and uvicorn.

By default the emulator starts Multi Model Server itself (the native path: the same server
and handler the image runs), on an internal loopback port that is never exposed, with
``SAGEMAKER_MULTI_MODEL=true`` and ``SCORER_MODELS_ROOT`` set to the cache root. With a
model server URL (the compose ``model-server`` service) it uses that server instead; the
cache root must then be a directory both see at the same path.

With ``watch`` (``--watch``) a changed model is loaded again while everything keeps
running (:mod:`scorer.local.reload`). A single model is then registered by the emulator
itself, one version at a time, on a model server started without a startup model (in
multi-model mode, whose models root is the model directory's parent, or for an archive the
folder its versions are extracted to).

:meth:`LocalEndpoint.serve` runs in the foreground (``scorer local``; SIGINT/SIGTERM stop
it, and the model server with it); :meth:`LocalEndpoint.running` runs it in a background
thread (tests, notebooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from scorer.cache.cache import ModelCache
from scorer.cache.settings import parse_size
from scorer.cache.sources import DirectorySource, open_source
from scorer.config import ServerConfig, load_config
from scorer.errors import ConfigError, ModelServerUnavailableError, ScorerError
from scorer.frontend.backend import ModelServerEndpoint
from scorer.local.app import create_app
from scorer.local.reload import ArchiveReloader, DeveloperRegistry, ModelVersions
from scorer.local.serverless import max_concurrency, memory_mb, serverless_environment
from scorer.local.settings import LOCAL_REGION, LocalSettings, load_local_settings
from scorer.local.watch import FileWatcher
from scorer.metrics.emf import EmfSettings, emf_settings
from scorer.models.archive import check_archive, safe_extract
from scorer.modelserver.client import ModelServerClient
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer
from scorer.modelserver.registry import MmsModelRegistry
from scorer.modelserver.start import internal_config, start_model_server

logger = logging.getLogger("scorer.local")

MODEL_SERVER_START_TIMEOUT = 180.0
_EXTERNAL_WAIT_SECONDS = 180.0


_EXAMPLE_CANDIDATES = 10  # archives checked for the invoke snippet (each is read in full)


def _files(archive: Path) -> tuple[str, ...] | None:
    """The archive's files if it passes scorer's archive checks, else None."""
    try:
        return check_archive(archive).files
    except ScorerError:
        return None


def _has_user_code(files: tuple[str, ...]) -> bool:
    return any(name.startswith("code/") for name in files)


def invoke_snippet(settings: LocalSettings, url: str, example_model: str | None) -> str:
    """The boto3 one-liner that invokes this endpoint."""
    target = f"TargetModel='{example_model}', " if settings.multi_model else ""
    if settings.inference_components:
        target = f"InferenceComponentName='{next(iter(settings.inference_components))}', "
    return (
        "python -c \"import boto3; print(boto3.client('sagemaker-runtime', "
        f"endpoint_url='{url}', region_name='{LOCAL_REGION}', aws_access_key_id='x', "
        "aws_secret_access_key='x').invoke_endpoint("
        f"EndpointName='{settings.endpoint_name}', {target}ContentType='image/jpeg', "
        "Body=open('creative.jpg', 'rb').read())['Body'].read().decode())\""
    )


class LocalEndpoint:
    """The emulator, its model cache and (unless external) the model server it starts."""

    def __init__(self, settings: LocalSettings, environ: Mapping[str, str] | None = None):
        """Args:
        settings: the emulator settings.
        environ: the environment the model server inherits (default ``os.environ``).
        """
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        if settings.serverless:  # the model server it starts: no GPU, the endpoint's memory
            self.environ.update(serverless_environment(settings))
        self.model_server: ModelServer | None = None
        self.endpoint: ModelServerEndpoint | None = None
        self._run_dir: Path | None = None
        self._own_run_dir = False
        self._app: Starlette | None = None

    # ------------------------------------------------------------------ start / stop

    def start(self) -> Starlette:
        """Start (or wait for) the model server and build the app; idempotent."""
        if self._app is not None:
            return self._app
        try:
            self._app = self._start()
        except BaseException:
            self.close()
            raise
        return self._app

    def _start(self) -> Starlette:
        settings = self.settings
        server_config = load_config(self.environ)
        emf = emf_settings(server_config)  # EMF lines of the workers' and the cache's metrics
        if settings.model_server_url:
            _wait_for_ping(settings.model_server_url, _EXTERNAL_WAIT_SECONDS)
            self.endpoint = ModelServerEndpoint(settings.model_server_url, unload_on_exit=True)
            cache = None
            if settings.multi_model:
                registry = MmsModelRegistry(ModelServerClient(settings.model_server_url))
                cache = ModelCache.from_settings(settings.cache, registry)
            return create_app(
                settings, self.endpoint, cache, emf, watcher=self._prefix_watcher(cache)
            )
        run_dir = self._prepare_run_dir()
        if settings.watch and not settings.multi_model:
            return self._start_watched_model(server_config, run_dir, emf)
        cache_root = (
            settings.cache.cache_dir if settings.cache_dir_set else run_dir / "models"
        ).absolute()
        cache_root.mkdir(parents=True, exist_ok=True)
        model_dir = self._single_model_dir(run_dir) if not settings.multi_model else None
        endpoint, registry = self._start_model_server(
            server_config,
            run_dir,
            models_root=cache_root,
            multi_model=settings.multi_model,
            model_dir=model_dir,
        )
        cache = None
        if settings.multi_model:
            cache_settings = replace(settings.cache, cache_dir=cache_root)
            developer = DeveloperRegistry(registry) if settings.watch else registry
            cache = ModelCache.from_settings(cache_settings, developer)
        return create_app(settings, endpoint, cache, emf, watcher=self._prefix_watcher(cache))

    def _start_model_server(
        self,
        server_config: ServerConfig,
        run_dir: Path,
        *,
        models_root: Path,
        multi_model: bool,
        model_dir: Path | None = None,
    ) -> tuple[ModelServerEndpoint, MmsModelRegistry]:
        """Start this run's own model server (in ``run_dir/mms``, on a free loopback port)
        and make it the endpoint; returns the endpoint and the server's model registry."""
        config = internal_config(
            server_config,
            port=free_loopback_port(),
            run_dir=run_dir / "mms",
            models_root=models_root,
            multi_model=multi_model,
            model_dir=model_dir,
        )
        server, registry = start_model_server(
            config, self.environ, startup_timeout=MODEL_SERVER_START_TIMEOUT
        )
        self.model_server = server
        self.endpoint = ModelServerEndpoint(
            server.url, log_hint=str(config.log_dir), metrics_dir=config.metrics_dir
        )
        return self.endpoint, registry

    def _start_watched_model(
        self, server_config: ServerConfig, run_dir: Path, emf: EmfSettings | None
    ) -> Starlette:
        """``--model-dir --watch``: a model server without a startup model; the app loads
        each version of the model (:class:`~scorer.local.reload.ModelVersions`)."""
        source = self.settings.model_dir
        assert source is not None
        source = source.absolute()
        if not source.exists():
            raise ConfigError(f"{source} is neither a model directory nor a model archive")
        versions_dir = run_dir / "versions"
        endpoint, registry = self._start_model_server(
            server_config,
            run_dir,
            models_root=source.resolve().parent if source.is_dir() else versions_dir,
            multi_model=True,
        )
        versions = ModelVersions(
            source,
            DeveloperRegistry(registry),
            versions_dir,
            load_wait_s=self.settings.cache.load_wait_seconds,
        )
        if source.is_dir():
            watcher = FileWatcher(
                [source], versions.on_change, accept=lambda path: not path.is_relative_to(run_dir)
            )
        else:  # the archive's folder: a tool may replace the file (write, then rename)
            watcher = FileWatcher(
                [source.parent], versions.on_change, accept=source.__eq__, recursive=False
            )
        return create_app(self.settings, endpoint, None, emf, versions=versions, watcher=watcher)

    def _prefix_watcher(self, cache: ModelCache | None) -> FileWatcher | None:
        """``--model-prefix DIR --watch``: the prefix's archives, reloaded when they change."""
        if not self.settings.watch or cache is None:
            return None
        source = cache.source
        if not isinstance(source, DirectorySource) or not source.root.is_dir():
            raise ConfigError(f"--watch needs a directory model prefix, not {source.uri}")
        cache_root = cache.root
        return FileWatcher(
            [source.root],
            ArchiveReloader(cache, source.root),
            accept=lambda path: not path.is_relative_to(cache_root),
        )

    def _prepare_run_dir(self) -> Path:
        if self.settings.run_dir is not None:
            self._run_dir = self.settings.run_dir.absolute()
            self._run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._run_dir = Path(tempfile.mkdtemp(prefix="scorer-local-"))
            self._own_run_dir = True
        return self._run_dir

    def _single_model_dir(self, run_dir: Path) -> Path:
        model = self.settings.model_dir
        assert model is not None
        if model.is_dir():
            return model.absolute()
        if not model.is_file():
            raise ConfigError(f"{model} is neither a model directory nor a model archive")
        dest = run_dir / "model"
        if dest.exists():
            shutil.rmtree(dest)
        safe_extract(model, dest)
        return dest

    def close(self) -> None:
        """Stop the model server it started and remove its temporary run directory."""
        server = self.model_server
        self.model_server = None
        if server is not None:
            server.stop(grace=10)
        if self._own_run_dir and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._own_run_dir = False

    # ------------------------------------------------------------------ serving

    def _uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.start(),
            host=self.settings.bind,
            port=self.settings.port,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        return uvicorn.Server(config)

    def example_model(self) -> str | None:
        """One archive under a directory prefix, to show in the invoke snippet: of the first
        :data:`_EXAMPLE_CANDIDATES` (by name), the first that passes the archive checks and
        is served by scorer's default chain (no ``code/``: no user code that may fail to
        load), else the first that passes the checks, else the first."""
        prefix = self.settings.cache.model_prefix
        if not prefix:
            return None
        source = open_source(prefix)
        if isinstance(source, DirectorySource) and source.root.is_dir():
            found = sorted(source.root.rglob("*.tar.gz"))[:_EXAMPLE_CANDIDATES]
            if not found:
                return "creative-v3.tar.gz"
            checked = [(path, _files(path)) for path in found]
            usable = [(path, files) for path, files in checked if files is not None]
            default_chain = [path for path, files in usable if not _has_user_code(files)]
            pick = (default_chain or [path for path, _ in usable] or found)[0]
            return pick.relative_to(source.root).as_posix()
        return "creative-v3.tar.gz"

    def serve(self, announce: Callable[[str], None] | None = None) -> None:
        """Serve in the foreground until SIGINT/SIGTERM, then stop the model server.

        A signal while the model server starts aborts the start (``SystemExit``); once
        uvicorn serves, it shuts down gracefully and the model server is stopped after it.

        Args:
            announce: called with the emulator's URL once it accepts connections.
        """
        server: uvicorn.Server | None = None

        def _on_signal(signum: int, _frame: object) -> None:
            if server is None:
                raise SystemExit(128 + signum)
            # uvicorn handles the signal while it serves, then raises it again after its
            # shutdown (with this handler restored): only make sure it stops.
            server.should_exit = True

        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, _on_signal) for sig in handled}
        try:
            _check_port_free(self.settings.bind, self.settings.port)
            server = self._uvicorn()

            async def main(server: uvicorn.Server) -> None:
                serving = asyncio.create_task(server.serve())
                while not server.started and not serving.done():
                    await asyncio.sleep(0.05)
                if server.started and announce is not None:
                    announce(_bound_url(server, self.settings.bind))
                await serving

            asyncio.run(main(server))
        finally:
            self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[str]:
        """Serve in a background thread; yields the emulator's URL; stops everything on exit."""
        try:
            app = self.start()
            with serve_in_thread(app, self.settings.bind, self.settings.port, timeout) as url:
                yield url
        finally:
            self.close()


@contextlib.contextmanager
def serve_in_thread(
    app: Starlette, bind: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (port 0: any); yields its URL."""
    config = uvicorn.Config(
        app,
        host=bind,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="scorer-local", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the local SageMaker Runtime emulator did not start")
        time.sleep(0.02)
    try:
        yield _bound_url(server, bind)
    finally:
        server.should_exit = True
        thread.join(timeout)


def _bound_url(server: uvicorn.Server, bind: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    host = "127.0.0.1" if bind in {"0.0.0.0", "::", ""} else bind
    return f"http://{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
            ) from None


def _wait_for_ping(url: str, timeout: float, report_every: float = 10.0) -> None:
    """Wait until the model server at ``url`` answers ``/ping`` with 200, saying every
    ``report_every`` seconds what it last saw (e.g. a host that does not resolve).

    Raises:
        ModelServerUnavailableError: no 200 within ``timeout`` seconds; the message says
            what the last attempt saw.
    """

    async def wait() -> None:
        started = time.monotonic()
        deadline, report_at = started + timeout, started + report_every
        state = "no answer yet"
        async with ModelServerClient(url) as client:
            while time.monotonic() < deadline:
                status, state = await client.ping_state()
                if status == 200:
                    logger.info("the model server at %s is ready", url)
                    return
                if time.monotonic() >= report_at:
                    report_at += report_every
                    logger.info(
                        "still waiting for the model server at %s (%.0f of %g s): %s",
                        url, time.monotonic() - started, timeout, state,
                    )  # fmt: skip
                await asyncio.sleep(0.5)
        raise ModelServerUnavailableError(
            f"the model server at {url} did not answer /ping with 200 within {timeout:g} s; "
            f"last: {state}"
        )

    logger.info("waiting up to %g s for the model server at %s to answer /ping", timeout, url)
    asyncio.run(wait())


_CACHE_OPTIONS = {
    "model_prefix": "model_prefix",
    "max_models": "max_models",
    "load_wait": "load_wait_seconds",
    "cache_dir": "cache_dir",
}
_OPTIONS = (
    "port",
    "bind",
    "endpoint_name",
    "model_dir",
    "run_dir",
    "model_server_url",
    "async_output_path",
    "async_failure_path",
    "async_max_concurrency",
    "async_success_topic",
    "async_error_topic",
    "data_capture",
    "data_capture_percent",
    "serverless_memory_mb",
    "serverless_max_concurrency",
)
_LISTS = {
    "capture_csv_content_type": "capture_csv_content_types",
    "capture_json_content_type": "capture_json_content_types",
}
_FLAGS = ("watch",)  # given only when set (an absent flag leaves the environment's value)


def overrides_from_options(options: Mapping[str, object]) -> dict[str, object]:
    """``scorer local`` options (None: not given) as :func:`load_local_settings` overrides.

    Raises:
        ConfigError: ``--max-memory`` is not a size.
    """
    overrides: dict[str, object] = {}
    for option, name in _CACHE_OPTIONS.items():
        if options.get(option) is not None:
            overrides[name] = options[option]
    if overrides.get("max_models") == 0:
        overrides["max_models"] = None
    memory = options.get("max_memory")
    if memory is not None:
        try:
            overrides["max_memory_bytes"] = parse_size(str(memory)) or None
        except ValueError as exc:
            raise ConfigError(f"--max-memory: {exc}") from None
    for name in _OPTIONS:
        if options.get(name) is not None:
            overrides[name] = options[name]
    for name in _FLAGS:
        if options.get(name):
            overrides[name] = True
    for option, name in _LISTS.items():
        values = options.get(option)
        if values:
            overrides[name] = tuple(str(value) for value in values)  # type: ignore[attr-defined]
    components = options.get("inference_component")
    if components:
        overrides["inference_components"] = parse_components(components)  # type: ignore[arg-type]
    return overrides


def parse_components(specs: Iterable[str]) -> dict[str, str]:
    """``--inference-component NAME=ARCHIVE`` values as {name: archive key}; a bare
    ``NAME`` serves ``NAME.tar.gz``.

    Raises:
        ConfigError: a name given twice, or an empty name or archive.
    """
    components: dict[str, str] = {}
    for spec in specs:
        name, sep, key = spec.partition("=")
        name, key = name.strip(), key.strip() if sep else f"{spec.strip()}.tar.gz"
        if not name or not key:
            raise ConfigError(f"--inference-component wants NAME=ARCHIVE, got {spec!r}")
        if name in components:
            raise ConfigError(f"--inference-component {name} is given twice")
        components[name] = key
    return components


def run_local(environ: Mapping[str, str], options: Mapping[str, object]) -> int:
    """``scorer local``: serve until SIGINT/SIGTERM; print the boto3 one-liner when ready.

    Raises:
        ConfigError: the options or environment cannot be used.
    """
    settings = load_local_settings(environ, overrides_from_options(options))
    endpoint = LocalEndpoint(settings, environ)

    def announce(url: str) -> None:
        kind = (
            f"multi-model, models from {settings.cache.model_prefix}"
            if settings.multi_model
            else f"single model {settings.model_dir}"
        )
        if settings.watch:
            kind += "; watching it: a saved change loads the model again"
        if settings.async_output_path:
            kind += f"; asynchronous inference writes to {settings.async_output_path}"
        if settings.inference_components:
            names = ", ".join(
                f"{name} ({key})" for name, key in settings.inference_components.items()
            )
            kind += f"; inference components {names}"
        if settings.serverless:
            kind += (
                f"; serverless: {memory_mb(settings)} MB, at most "
                f"{max_concurrency(settings)} invocations at once, 4 MB bodies, no GPU"
            )
        if settings.data_capture:
            kind += (
                f"; capturing {settings.data_capture_percent}% of invocations to "
                f"{settings.data_capture}"
            )
        print(
            f"\nscorer local: endpoint {settings.endpoint_name!r} is ready at {url} "
            f"({kind}).\nInvoke it with:\n\n"
            f"  {invoke_snippet(settings, url, endpoint.example_model())}\n\n"
            "Press Ctrl+C to stop.\n",
            flush=True,
        )

    endpoint.serve(announce)
    return 0

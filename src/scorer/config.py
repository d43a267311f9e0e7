"""Every environment variable scorer reads, in one place, read once into a frozen object.

SageMaker configures a container through environment variables (the ``SAGEMAKER_*``
names below are the platform's and the sagemaker-inference toolkit's). scorer adds
``SCORER_*`` names for what the platform leaves open: every path that defaults to
``/opt/ml/...`` or ``/etc/...`` can be moved, so the server also runs as a normal user.

Nothing here is read at import time: call :func:`load_config` with a mapping (usually
``os.environ``) at start-up and pass the result down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import ConfigError

# --- SageMaker platform / toolkit names -------------------------------------------------
MULTI_MODEL = "SAGEMAKER_MULTI_MODEL"
BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
SAFE_PORT_RANGE = "SAGEMAKER_SAFE_PORT_RANGE"
MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MODEL_SERVER_TIMEOUT_SECONDS = "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
MODEL_SERVER_VMARGS = "SAGEMAKER_MODEL_SERVER_VMARGS"
STARTUP_TIMEOUT = "SAGEMAKER_STARTUP_TIMEOUT"
PROGRAM = "SAGEMAKER_PROGRAM"
DEFAULT_INVOCATIONS_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
MAX_REQUEST_SIZE = "SAGEMAKER_MAX_REQUEST_SIZE"
MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
LOG_LEVEL = "SAGEMAKER_CONTAINER_LOG_LEVEL"
BATCH = "SAGEMAKER_BATCH"
BATCH_STRATEGY = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"

# --- scorer's own names -----------------------------------------------------------------
MODEL_DIR = "SCORER_MODEL_DIR"  # single-model: where SageMaker extracts model.tar.gz
MODELS_ROOT = "SCORER_MODELS_ROOT"  # multi-model: under which POST /models urls must lie
MMS_CONFIG_PATH = "SCORER_MMS_CONFIG"  # the MMS properties file scorer writes
RUN_DIR = "SCORER_RUN_DIR"  # MMS temp dir, pid file, logs, per-model packages
ALLOW_PICKLE = "SCORER_ALLOW_PICKLE"  # opt-in: full (unsafe) torch.load of pickles
DEVICE = "SCORER_DEVICE"  # auto | cpu | cuda
GPU_PLACEMENT = "SCORER_GPU_PLACEMENT"  # most-free | mms
THREADS_PER_WORKER = "SCORER_THREADS_PER_WORKER"
INSTALL_REQUIREMENTS = "SCORER_INSTALL_REQUIREMENTS"  # per-model code/requirements.txt
PIP_ARGS = "SCORER_PIP_ARGS"  # extra pip arguments for per-model installs
MODEL_LOAD_TIMEOUT = "SCORER_MODEL_LOAD_TIMEOUT"  # seconds one model load may take
WORKER_MEMORY_LIMIT_MB = "SCORER_WORKER_MEMORY_LIMIT_MB"  # auto | off | MB per worker
WORKER_ZYGOTE = "SCORER_WORKER_ZYGOTE"  # fork model workers from a pre-warmed process
MAX_BATCH_SIZE = "SCORER_MAX_BATCH_SIZE"  # requests one forward pass may take (MMS batch)
MAX_BATCH_DELAY_MS = "SCORER_MAX_BATCH_DELAY_MS"  # how long MMS gathers a batch
MMS_PLUGINS = "SCORER_MMS_PLUGINS"  # folder of scorer's MMS plugin jars (/ping, ...)
MMS_LOG_CONFIG = "SCORER_MMS_LOG_CONFIG"  # MMS's log4j2 configuration file
LOG_FORMAT = "SCORER_LOG_FORMAT"  # json | text: scorer's event lines (one per request, ...)

# --- the model cache (self-managed multi-model mode and the local emulator) -------------
MODEL_PREFIX = "SCORER_MODEL_PREFIX"  # where model keys resolve: a directory or s3://b/p/
CACHE_DIR = "SCORER_CACHE_DIR"
CACHE_MAX_MODELS = "SCORER_CACHE_MAX_MODELS"
CACHE_MAX_MEMORY = "SCORER_CACHE_MAX_MEMORY"
CACHE_LOAD_WAIT = "SCORER_CACHE_LOAD_WAIT"
CACHE_GPU_MEMORY_FRACTION = "SCORER_CACHE_GPU_MEMORY_FRACTION"
DEFAULT_MODEL = "SCORER_DEFAULT_MODEL"  # self-managed mode: the model when none is named

# --- the local SageMaker Runtime emulator ----------------------------------------------
LOCAL_ENDPOINT_NAME = "SCORER_LOCAL_ENDPOINT_NAME"
LOCAL_BIND = "SCORER_LOCAL_BIND"
LOCAL_PORT = "SCORER_LOCAL_PORT"
LOCAL_MODEL_SERVER_URL = "SCORER_LOCAL_MODEL_SERVER_URL"
LOCAL_WATCH = "SCORER_LOCAL_WATCH"  # hot reload: re-register models whose files change
LOCAL_ASYNC_OUTPUT_PATH = "SCORER_LOCAL_ASYNC_OUTPUT_PATH"  # s3://b/p/: async results
LOCAL_ASYNC_FAILURE_PATH = "SCORER_LOCAL_ASYNC_FAILURE_PATH"  # s3://b/p/: async errors
LOCAL_ASYNC_MAX_CONCURRENCY = "SCORER_LOCAL_ASYNC_MAX_CONCURRENCY"  # async calls at once
LOCAL_ASYNC_SUCCESS_TOPIC = "SCORER_LOCAL_ASYNC_SUCCESS_TOPIC"  # SNS ARN: async successes
LOCAL_ASYNC_ERROR_TOPIC = "SCORER_LOCAL_ASYNC_ERROR_TOPIC"  # SNS ARN: async failures

# --- metrics (the first is prometheus_client's name, set by scorer for MMS's workers) -----
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # where each worker writes its metrics
EMF = "SCORER_EMF"  # CloudWatch embedded metric format lines on stdout (default on)
METRICS_NAMESPACE = "SCORER_METRICS_NAMESPACE"  # their CloudWatch namespace
EMF_INTERVAL_SECONDS = "SCORER_EMF_INTERVAL_SECONDS"  # how often they are written

SAGEMAKER_PAYLOAD_LIMIT = 6 * 1024 * 1024  # InvokeEndpoint Body maximum (botocore model)
BATCH_STRATEGIES = ("MULTI_RECORD", "SINGLE_RECORD")  # SAGEMAKER_BATCH_STRATEGY's values
DEFAULT_TIMEOUT_SECONDS = 60  # one invocation, real-time
DEFAULT_BATCH_TIMEOUT_SECONDS = 600  # a transform job's InvocationsTimeoutInSeconds default
DEFAULT_MAX_BATCH_SIZE = 8  # requests per forward pass; bench/README.md has the measurement
DEFAULT_MAX_BATCH_DELAY_MS = 5  # MMS waits this long for a batch to fill
DEFAULT_METRICS_NAMESPACE = "scorer"
DEFAULT_EMF_INTERVAL_SECONDS = 60
_NAMESPACE = re.compile(r"^[A-Za-z0-9 ._/#:-]{1,255}$")  # CloudWatch's namespace characters


@dataclass(frozen=True)
class ServerConfig:
    """The server's configuration, as read once from the environment at start-up."""

    multi_model: bool
    port: int
    safe_port_range: tuple[int, int] | None
    workers: int | None
    timeout_seconds: int
    load_timeout_seconds: int
    startup_timeout_seconds: int
    vmargs: str
    program: str
    default_accept: str
    max_request_size: int
    log_level: str
    model_dir: Path
    models_root: Path
    mms_config_path: Path
    run_dir: Path
    allow_pickle: bool
    device: str
    gpu_placement: str
    threads_per_worker: int | None
    install_requirements: bool
    worker_memory_limit: str
    worker_zygote: bool
    pip_args: tuple[str, ...]
    batch: bool
    batch_strategy: str
    max_concurrent_transforms: int
    max_payload_in_mb: int
    mms_plugins_dir: Path | None = None
    mms_log_config: Path | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    emf: bool = True
    log_format: str = "json"
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    emf_interval_seconds: int = DEFAULT_EMF_INTERVAL_SECONDS

    @property
    def packages_dir(self) -> Path:
        """Where per-model ``code/requirements.txt`` installs are cached."""
        return self.run_dir / "packages"

    @property
    def mms_tmp_dir(self) -> Path:
        """The temp dir MMS uses for its pid file and worker sockets."""
        return self.run_dir / "tmp"

    @property
    def log_dir(self) -> Path:
        """Where MMS writes its logs."""
        return self.run_dir / "logs"

    @property
    def inflight_dir(self) -> Path:
        """One file per worker with its count of requests in flight (for draining)."""
        return self.run_dir / "inflight"

    @property
    def load_failures_dir(self) -> Path:
        """One JSON record per model whose last load failed (read by ``/ping``)."""
        return self.run_dir / "load-failures"

    @property
    def metrics_dir(self) -> Path:
        """The workers' Prometheus metrics files (``PROMETHEUS_MULTIPROC_DIR``), one set per
        worker process, summed when scraped (:mod:`scorer.metrics`)."""
        return self.run_dir / "metrics"


def _bool(environ: Mapping[str, str], key: str, default: bool) -> bool:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


JAVA_INT_MAX = 2**31 - 1  # MMS parses its numeric properties with Integer.parseInt


def _int(
    environ: Mapping[str, str],
    key: str,
    default: int | None,
    minimum: int = 0,
    maximum: int = JAVA_INT_MAX,
) -> int | None:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{key} must be <= {maximum}, got {value}")
    return value


def _port_range(environ: Mapping[str, str]) -> tuple[int, int] | None:
    raw = environ.get(SAFE_PORT_RANGE)
    if not raw:
        return None
    try:
        low, high = (int(part) for part in raw.split("-"))
    except ValueError:
        raise ConfigError(f"{SAFE_PORT_RANGE} must look like 'XXXX-YYYY', got {raw!r}") from None
    if not 0 < low <= high < 65536:
        raise ConfigError(f"{SAFE_PORT_RANGE} is not a valid port range: {raw!r}")
    return low, high


def _max_request_size(environ: Mapping[str, str]) -> int:
    size = _int(environ, MAX_REQUEST_SIZE, None, minimum=1)
    if size is not None:
        return size
    megabytes = _int(environ, MAX_PAYLOAD_IN_MB, None, minimum=0, maximum=JAVA_INT_MAX >> 20)
    if megabytes == 0:  # a transform job's MaxPayloadInMB=0: chunked, no size limit
        return JAVA_INT_MAX
    if megabytes is not None:
        return megabytes * 1024 * 1024
    return SAGEMAKER_PAYLOAD_LIMIT


def _batch_strategy(environ: Mapping[str, str]) -> str:
    """``MULTI_RECORD`` or ``SINGLE_RECORD``; the API's spellings (``MultiRecord``) too."""
    raw = (environ.get(BATCH_STRATEGY) or "").strip()
    if not raw:
        return BATCH_STRATEGIES[0]
    value = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", raw).upper()
    if value not in BATCH_STRATEGIES:
        raise ConfigError(
            f"{BATCH_STRATEGY} must be MULTI_RECORD or SINGLE_RECORD "
            f"(or MultiRecord, SingleRecord), got {raw!r}"
        )
    return value


def _timeout_seconds(environ: Mapping[str, str], batch: bool) -> int:
    # The toolkit's SAGEMAKER_MODEL_SERVER_TIMEOUT ends up in MMS's default_response_timeout,
    # which MMS reads as *minutes* (aws/sagemaker-inference-toolkit#99). scorer reads it as
    # seconds, as the SageMaker documentation describes it; the explicit _SECONDS name wins.
    # A transform job (SAGEMAKER_BATCH) waits 600 s per call by default, so scorer does too.
    limit = JAVA_INT_MAX // 2  # MMS adds the load bound's margin to the larger of the two
    default = DEFAULT_BATCH_TIMEOUT_SECONDS if batch else DEFAULT_TIMEOUT_SECONDS
    seconds = _int(environ, MODEL_SERVER_TIMEOUT_SECONDS, None, minimum=1, maximum=limit)
    if seconds is None:
        seconds = _required_int(environ, MODEL_SERVER_TIMEOUT, default, 1, limit)
    return seconds


def _memory_limit(environ: Mapping[str, str]) -> str:
    raw = (environ.get(WORKER_MEMORY_LIMIT_MB) or "auto").strip().lower()
    if raw in {"auto", "off"}:
        return raw
    megabytes = _int({WORKER_MEMORY_LIMIT_MB: raw}, WORKER_MEMORY_LIMIT_MB, None, minimum=64)
    return str(megabytes)


def read_log_format(environ: Mapping[str, str]) -> str:
    """``SCORER_LOG_FORMAT``: ``json`` (default) or ``text``, for every event line."""
    return _choice(environ, LOG_FORMAT, ("json", "text"))


def _choice(environ: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = (environ.get(key) or choices[0]).strip().lower()
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _namespace(environ: Mapping[str, str]) -> str:
    namespace = (environ.get(METRICS_NAMESPACE) or "").strip() or DEFAULT_METRICS_NAMESPACE
    if not _NAMESPACE.match(namespace) or namespace.startswith("AWS/"):
        raise ConfigError(
            f"{METRICS_NAMESPACE} must be a CloudWatch namespace (at most 255 of A-Z a-z 0-9 "
            f"space . _ / # : -, not starting AWS/), got {namespace!r}"
        )
    return namespace


def load_config(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read the server configuration from ``environ`` (default: ``os.environ``).

    Raises:
        ConfigError: a variable is set to a value that cannot be used.
    """
    env = os.environ if environ is None else environ
    port = _required_int(env, BIND_TO_PORT, 8080, 1, JAVA_INT_MAX)
    if port >= 65536:
        raise ConfigError(f"{BIND_TO_PORT} is not a valid port: {port}")
    device = env.get(DEVICE, "auto").strip().lower() or "auto"
    if device not in {"auto", "cpu", "cuda"}:
        raise ConfigError(f"{DEVICE} must be auto, cpu or cuda, got {device!r}")
    run_dir = Path(env.get(RUN_DIR) or "/tmp/scorer")
    startup = _required_int(env, STARTUP_TIMEOUT, 600, 1, JAVA_INT_MAX)
    load_timeout = _required_int(env, MODEL_LOAD_TIMEOUT, 300, 1, JAVA_INT_MAX // 2)
    # 0 is the API's "not set" (the platform then asks /execution-parameters): 1
    concurrent = _required_int(env, MAX_CONCURRENT_TRANSFORMS, 1, 0, JAVA_INT_MAX) or 1
    payload_mb = _required_int(env, MAX_PAYLOAD_IN_MB, 6, 0, JAVA_INT_MAX >> 20)
    batch = _bool(env, BATCH, False)
    return ServerConfig(
        multi_model=_bool(env, MULTI_MODEL, False),
        port=port,
        safe_port_range=_port_range(env),
        workers=_int(env, MODEL_SERVER_WORKERS, None, minimum=1),
        timeout_seconds=_timeout_seconds(env, batch),
        load_timeout_seconds=load_timeout,
        startup_timeout_seconds=startup,
        vmargs=env.get(MODEL_SERVER_VMARGS, "-XX:-UseContainerSupport -XX:+UseG1GC"),
        program=env.get(PROGRAM, "inference.py"),
        default_accept=env.get(DEFAULT_INVOCATIONS_ACCEPT, "application/json"),
        max_request_size=_max_request_size(env),
        log_level=env.get(LOG_LEVEL, "INFO"),
        model_dir=Path(env.get(MODEL_DIR) or "/opt/ml/model"),
        models_root=Path(env.get(MODELS_ROOT) or "/opt/ml/models"),
        mms_config_path=Path(env.get(MMS_CONFIG_PATH) or "/etc/sagemaker-mms.properties"),
        run_dir=run_dir,
        allow_pickle=_bool(env, ALLOW_PICKLE, False),
        device=device,
        gpu_placement=_choice(env, GPU_PLACEMENT, ("most-free", "mms")),
        threads_per_worker=_int(env, THREADS_PER_WORKER, None, minimum=1),
        install_requirements=_bool(env, INSTALL_REQUIREMENTS, True),
        worker_memory_limit=_memory_limit(env),
        worker_zygote=_bool(env, WORKER_ZYGOTE, True),
        pip_args=tuple(env.get(PIP_ARGS, "").split()),
        batch=batch,
        batch_strategy=_batch_strategy(env),
        max_concurrent_transforms=concurrent,
        max_payload_in_mb=payload_mb,
        max_batch_size=_required_int(env, MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_SIZE, 1, 1024),
        max_batch_delay_ms=_required_int(
            env, MAX_BATCH_DELAY_MS, DEFAULT_MAX_BATCH_DELAY_MS, 0, 60_000
        ),
        mms_plugins_dir=_optional_path(env, MMS_PLUGINS),
        mms_log_config=_optional_path(env, MMS_LOG_CONFIG),
        emf=_bool(env, EMF, True),
        log_format=read_log_format(env),
        metrics_namespace=_namespace(env),
        emf_interval_seconds=_required_int(
            env, EMF_INTERVAL_SECONDS, DEFAULT_EMF_INTERVAL_SECONDS, 1, 86_400
        ),
    )


def _required_int(
    environ: Mapping[str, str], key: str, default: int, minimum: int, maximum: int
) -> int:
    value = _int(environ, key, default, minimum=minimum, maximum=maximum)
    assert value is not None
    return value


def _optional_path(environ: Mapping[str, str], key: str) -> Path | None:
    raw = (environ.get(key) or "").strip()
    return Path(raw) if raw else None


def to_environ(config: ServerConfig) -> dict[str, str]:
    """``config`` as environment variables: what a child process (an MMS worker) reads back.

    ``load_config(to_environ(config)) == config``: the only way configuration reaches
    another process, so a value derived in the parent (a port, a run dir) is never lost.
    """
    env = {
        MULTI_MODEL: str(config.multi_model).lower(),
        BIND_TO_PORT: str(config.port),
        MODEL_SERVER_TIMEOUT_SECONDS: str(config.timeout_seconds),
        MODEL_LOAD_TIMEOUT: str(config.load_timeout_seconds),
        STARTUP_TIMEOUT: str(config.startup_timeout_seconds),
        MODEL_SERVER_VMARGS: config.vmargs,
        PROGRAM: config.program,
        DEFAULT_INVOCATIONS_ACCEPT: config.default_accept,
        MAX_REQUEST_SIZE: str(config.max_request_size),
        LOG_LEVEL: config.log_level,
        MODEL_DIR: str(config.model_dir),
        MODELS_ROOT: str(config.models_root),
        MMS_CONFIG_PATH: str(config.mms_config_path),
        RUN_DIR: str(config.run_dir),
        ALLOW_PICKLE: str(config.allow_pickle).lower(),
        DEVICE: config.device,
        GPU_PLACEMENT: config.gpu_placement,
        INSTALL_REQUIREMENTS: str(config.install_requirements).lower(),
        WORKER_MEMORY_LIMIT_MB: config.worker_memory_limit,
        WORKER_ZYGOTE: str(config.worker_zygote).lower(),
        PIP_ARGS: " ".join(config.pip_args),
        BATCH: str(config.batch).lower(),
        BATCH_STRATEGY: config.batch_strategy,
        MAX_CONCURRENT_TRANSFORMS: str(config.max_concurrent_transforms),
        MAX_PAYLOAD_IN_MB: str(config.max_payload_in_mb),
        MAX_BATCH_SIZE: str(config.max_batch_size),
        MAX_BATCH_DELAY_MS: str(config.max_batch_delay_ms),
        EMF: str(config.emf).lower(),
        LOG_FORMAT: config.log_format,
        METRICS_NAMESPACE: config.metrics_namespace,
        EMF_INTERVAL_SECONDS: str(config.emf_interval_seconds),
        SAFE_PORT_RANGE: "",
        MODEL_SERVER_WORKERS: "",
        THREADS_PER_WORKER: "",
        MMS_PLUGINS: "",
        MMS_LOG_CONFIG: "",
    }
    if config.safe_port_range is not None:
        env[SAFE_PORT_RANGE] = "-".join(str(port) for port in config.safe_port_range)
    if config.workers is not None:
        env[MODEL_SERVER_WORKERS] = str(config.workers)
    if config.threads_per_worker is not None:
        env[THREADS_PER_WORKER] = str(config.threads_per_worker)
    if config.mms_plugins_dir is not None:
        env[MMS_PLUGINS] = str(config.mms_plugins_dir)
    if config.mms_log_config is not None:
        env[MMS_LOG_CONFIG] = str(config.mms_log_config)
    return env

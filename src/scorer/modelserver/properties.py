"""Multi Model Server's configuration (its properties file), derived from a :class:`ServerConfig`.

What the sagemaker-inference toolkit writes to ``/etc/sagemaker-mms.properties``, with its
known problems fixed: the response timeout in seconds (``default_response_timeout_seconds``;
the toolkit writes minutes, #99) as a backstop behind scorer's own bounds; single-model
mode serves ``model_dir`` directly (no ``model-archiver`` round trip); plus the settings
scorer's MMS plugins read (``scorer_*``).
"""

from __future__ import annotations

from pathlib import Path

from scorer.config import ServerConfig
from scorer.cpus import cpu_count

HANDLER = "scorer.serving.handler_service:handle"
SINGLE_MODEL_NAME = "model"
CONTAINER_DIR = Path(__file__).resolve().parents[3] / "container"
"""The repository's ``container/`` folder (log4j2 config, plugin sources) in a checkout."""
# MMS's own reply timeout is a backstop behind scorer's per-load and per-request bounds,
# which the worker enforces itself (clear errors); MMS only acts if the worker is stuck.
BACKSTOP_MARGIN_SECONDS = 30


def backstop_timeout(config: ServerConfig) -> int:
    """MMS's ``default_response_timeout_seconds``: after both of scorer's own bounds."""
    return max(config.load_timeout_seconds, config.timeout_seconds) + BACKSTOP_MARGIN_SECONDS


def worker_count(config: ServerConfig) -> int:
    """Workers per model: the configured number, else 1 (one model copy per GPU/host)."""
    return config.workers or 1


def plugins_dir(config: ServerConfig) -> Path | None:
    """The folder of scorer's MMS plugin jars, if there is one with jars in it."""
    folder = config.mms_plugins_dir or CONTAINER_DIR / "mms-plugins" / "build"
    return folder if folder.is_dir() and any(folder.glob("*.jar")) else None


def log_config(config: ServerConfig) -> Path | None:
    """MMS's log4j2 configuration file, if there is one."""
    path = config.mms_log_config or CONTAINER_DIR / "log4j2.xml"
    return path if path.is_file() else None


def properties(
    config: ServerConfig, bind_address: str = "0.0.0.0", metrics_url: str | None = None
) -> dict[str, str]:
    """The MMS configuration properties for ``config`` (``metrics_url``: where the
    ``/metrics`` plugin fetches the workers' summed metrics; without it, 503)."""
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
        # defaults for models registered without batch settings (SageMaker's load call)
        "scorer_max_batch_size": str(config.max_batch_size),
        "scorer_max_batch_delay_ms": str(config.max_batch_delay_ms),
    }
    if not config.multi_model:
        # a startup model: /invocations finds it only among MMS's startup models; MMS
        # registers it with batch size 1, and scorer's ServerInitializer gives it scorer's
        # batching (ai.scorer.mms.ModelBatching.applyToStartupModels)
        props["load_models"] = f"{SINGLE_MODEL_NAME}={config.model_dir}"
    if metrics_url is not None:
        props["scorer_metrics_url"] = metrics_url
    plugins = plugins_dir(config)
    if plugins is not None:
        props["plugins_path"] = str(plugins)
    return props


def write_properties(
    config: ServerConfig, bind_address: str = "0.0.0.0", metrics_url: str | None = None
) -> Path:
    """Write the MMS properties file to ``config.mms_config_path``."""
    path = config.mms_config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    props = properties(config, bind_address, metrics_url)
    lines = [f"{key}={value}" for key, value in props.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

"""The local SageMaker Runtime emulator's settings, read once from an environment mapping.

Environment variables (the ``scorer local`` options override them):

==================================  =======================================================
``SCORER_LOCAL_ENDPOINT_NAME``      the endpoint name it answers to (default scorer-local)
``SCORER_LOCAL_BIND``               address to listen on (default 127.0.0.1)
``SCORER_LOCAL_PORT``               port to listen on (default 8080)
``SCORER_LOCAL_MODEL_SERVER_URL``   an already running model server (e.g. the compose
                                    ``model-server`` service) instead of starting one
``SCORER_LOCAL_WATCH``              ``true``: hot reload (``--watch``,
                                    :mod:`scorer.local.reload`)
``SCORER_LOCAL_ASYNC_OUTPUT_PATH``  ``s3://bucket/prefix/``: accept InvokeEndpointAsync and
                                    write its results there (AsyncInferenceConfig's
                                    ``S3OutputPath``; :mod:`scorer.local.asynchronous`)
``SCORER_LOCAL_ASYNC_FAILURE_PATH`` where its errors go (``S3FailurePath``; default: the
                                    output path)
``SCORER_LOCAL_ASYNC_MAX_CONCURRENCY``  async invocations run at once
                                    (``MaxConcurrentInvocationsPerInstance``; default 4)
``SCORER_LOCAL_ASYNC_SUCCESS_TOPIC``  an SNS topic ARN told of each async success
                                    (``NotificationConfig.SuccessTopic``)
``SCORER_LOCAL_ASYNC_ERROR_TOPIC``  an SNS topic ARN told of each async failure
                                    (``NotificationConfig.ErrorTopic``)
==================================  =======================================================

Data capture (:mod:`scorer.local.capture`), inference components and serverless limits
(:mod:`scorer.local.serverless`) are set by ``scorer local`` options only.

The model cache's own variables (``SCORER_MODEL_PREFIX``, ``SCORER_CACHE_*``) are read by
:func:`scorer.cache.settings.load_cache_settings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from scorer.cache.settings import CacheSettings, load_cache_settings
from scorer.config import CACHE_DIR, SAGEMAKER_PAYLOAD_LIMIT
from scorer.config import LOCAL_ASYNC_ERROR_TOPIC as ASYNC_ERROR_TOPIC
from scorer.config import LOCAL_ASYNC_FAILURE_PATH as ASYNC_FAILURE_PATH
from scorer.config import LOCAL_ASYNC_MAX_CONCURRENCY as ASYNC_MAX_CONCURRENCY
from scorer.config import LOCAL_ASYNC_OUTPUT_PATH as ASYNC_OUTPUT_PATH
from scorer.config import LOCAL_ASYNC_SUCCESS_TOPIC as ASYNC_SUCCESS_TOPIC
from scorer.config import LOCAL_BIND as BIND
from scorer.config import LOCAL_ENDPOINT_NAME as ENDPOINT_NAME
from scorer.config import LOCAL_MODEL_SERVER_URL as MODEL_SERVER_URL
from scorer.config import LOCAL_PORT as PORT
from scorer.config import LOCAL_WATCH as WATCH
from scorer.errors import ConfigError
from scorer.local.notifications import TOPIC_ARN
from scorer.local.serverless import (
    SERVERLESS_PAYLOAD_LIMIT,
    check_serverless,
)

DEFAULT_ENDPOINT_NAME = "scorer-local"
DEFAULT_VARIANT = "AllTraffic"
"""The production variant name SageMaker gives a single-variant endpoint by default."""
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
_RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # EndpointName, ...
_S3_PATH = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
DEFAULT_ASYNC_MAX_CONCURRENCY = 4
MAX_CAPTURE_CONTENT_TYPES = 10  # CaptureContentTypeHeader: 1-10 of each kind


@dataclass(frozen=True)
class LocalSettings:
    """What the emulator needs to know.

    Attributes:
        endpoint_name: the one endpoint name it serves; any other is "not found".
        bind: the listening address (loopback by default).
        port: the listening port.
        model_dir: single-model mode: the model directory (or archive) to serve.
        model_server_url: an external model server (management and inference on one
            URL); None starts one on an internal loopback port.
        cache: the model cache settings (multi-model mode: ``cache.model_prefix`` is set).
        variant_name: ``x-Amzn-Invoked-Production-Variant`` of every response.
        max_payload_bytes: the largest request body (SageMaker's 6 MB).
        invoke_timeout_seconds: how long one invocation may take.
        run_dir: where a model server started by the emulator keeps its files (None: a
            temporary directory removed on exit).
        cache_dir_set: whether ``cache.cache_dir`` was chosen (else a model server started
            by the emulator gets its cache under ``run_dir``).
        watch: hot reload: watch the model directory (or archive), or a directory model
            prefix, and load what changes again (:mod:`scorer.local.reload`).
        async_output_path: asynchronous inference: the ``s3://`` prefix results are
            written under (None: InvokeEndpointAsync is refused, as on an endpoint
            without AsyncInferenceConfig).
        async_failure_path: the ``s3://`` prefix errors are written under (None: the
            output path).
        async_max_concurrency: async invocations run at once; the rest wait their turn.
        async_success_topic: an SNS topic ARN each async success is published to (None:
            none; :mod:`scorer.local.notifications`).
        async_error_topic: an SNS topic ARN each async failure is published to.
        data_capture: a directory or ``s3://bucket/prefix`` that capture records go under
            (DataCaptureConfig's ``DestinationS3Uri``; None: no capture).
        data_capture_percent: ``InitialSamplingPercentage``, 0-100.
        capture_csv_content_types: ``CaptureContentTypeHeader.CsvContentTypes``.
        capture_json_content_types: ``CaptureContentTypeHeader.JsonContentTypes``.
        inference_components: component name -> archive key under the model prefix; when
            set, the endpoint hosts inference components and ``InferenceComponentName``
            picks the model.
        serverless_memory_mb: serverless: ``MemorySizeInMB`` (1024-6144, steps of 1024).
        serverless_max_concurrency: serverless: ``MaxConcurrency`` (1-200).
    """

    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    bind: str = "127.0.0.1"
    port: int = 8080
    model_dir: Path | None = None
    model_server_url: str | None = None
    cache: CacheSettings = field(default_factory=CacheSettings)
    variant_name: str = DEFAULT_VARIANT
    max_payload_bytes: int = SAGEMAKER_PAYLOAD_LIMIT
    invoke_timeout_seconds: float = 60.0
    run_dir: Path | None = None
    cache_dir_set: bool = False
    watch: bool = False
    async_output_path: str | None = None
    async_failure_path: str | None = None
    async_max_concurrency: int = DEFAULT_ASYNC_MAX_CONCURRENCY
    async_success_topic: str | None = None
    async_error_topic: str | None = None
    data_capture: str | None = None
    data_capture_percent: int = 100
    capture_csv_content_types: tuple[str, ...] = ()
    capture_json_content_types: tuple[str, ...] = ()
    inference_components: Mapping[str, str] = field(default_factory=dict)
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not _RESOURCE_NAME.match(self.endpoint_name):
            raise ConfigError(
                f"{self.endpoint_name!r} is not a valid SageMaker endpoint name "
                "(letters, digits and hyphens, at most 63)"
            )
        if not 0 <= self.port < 65536:  # 0: any free port
            raise ConfigError(f"not a valid port: {self.port}")
        if (self.model_dir is None) == (self.cache.model_prefix is None):
            raise ConfigError(
                "give either a model prefix (multi-model endpoint) or a model directory "
                "(single-model endpoint)"
            )
        if self.watch and self.model_dir is None and "://" in (self.cache.model_prefix or ""):
            raise ConfigError(
                f"--watch needs a model directory or a local model prefix, not "
                f"{self.cache.model_prefix}"
            )
        if self.watch and self.model_dir is not None and self.model_server_url:
            raise ConfigError(
                "--watch on a single model needs the model server the emulator starts "
                "(not --model-server-url)"
            )
        for option, path in (
            ("--async-output-path", self.async_output_path),
            ("--async-failure-path", self.async_failure_path),
        ):
            if path is not None and not _S3_PATH.match(path):
                raise ConfigError(f"{option} must be an s3://bucket/prefix/ path, got {path!r}")
        if self.async_failure_path is not None and self.async_output_path is None:
            raise ConfigError("--async-failure-path needs --async-output-path")
        if self.async_output_path is not None and self.multi_model:
            raise ConfigError(
                "asynchronous inference is not supported on a multi-model endpoint "
                "(as in SageMaker): give --model-dir, not --model-prefix"
            )
        for option, topic in (
            ("--async-success-topic", self.async_success_topic),
            ("--async-error-topic", self.async_error_topic),
        ):
            if topic is None:
                continue
            if not TOPIC_ARN.match(topic):
                raise ConfigError(
                    f"{option} must be an SNS topic ARN "
                    f"(arn:aws:sns:region:account:name), got {topic!r}"
                )
            if self.async_output_path is None:
                raise ConfigError(f"{option} needs --async-output-path")
        if not 1 <= self.async_max_concurrency <= 1000:
            raise ConfigError(
                f"--async-max-concurrency must be 1 to 1000, got {self.async_max_concurrency}"
            )
        self._check_capture()
        self._check_components()
        if self.serverless:
            check_serverless(self)

    def _check_capture(self) -> None:
        capture = self.data_capture
        if capture is not None and capture.startswith("s3:") and not _S3_PATH.match(capture):
            raise ConfigError(
                f"--data-capture must be a directory or an s3://bucket/prefix path, got {capture!r}"
            )
        if capture is not None and "://" not in capture and Path(capture).is_file():
            raise ConfigError(f"--data-capture must be a directory, not the file {capture}")
        if not 0 <= self.data_capture_percent <= 100:
            raise ConfigError(
                f"--data-capture-percent must be 0 to 100, got {self.data_capture_percent}"
            )
        for option, types in (
            ("--capture-csv-content-type", self.capture_csv_content_types),
            ("--capture-json-content-type", self.capture_json_content_types),
        ):
            if types and self.data_capture is None:
                raise ConfigError(f"{option} needs --data-capture")
            if len(types) > MAX_CAPTURE_CONTENT_TYPES:
                raise ConfigError(
                    f"{option} may be given at most {MAX_CAPTURE_CONTENT_TYPES} times"
                )

    def _check_components(self) -> None:
        if not self.inference_components:
            return
        if not self.multi_model:
            raise ConfigError(
                "--inference-component needs --model-prefix: each component serves one "
                "archive under the prefix"
            )
        for name, key in self.inference_components.items():
            if not _RESOURCE_NAME.match(name):  # InferenceComponentName: the same rule
                raise ConfigError(
                    f"{name!r} is not a valid inference component name "
                    "(letters, digits and hyphens, at most 63)"
                )
            if not key:
                raise ConfigError(f"inference component {name}: no archive given")

    @property
    def serverless(self) -> bool:
        """Whether serverless limits apply (``--serverless-*`` given)."""
        return self.serverless_memory_mb is not None or self.serverless_max_concurrency is not None

    @property
    def payload_limit(self) -> int:
        """The largest request (and, serverless, response) body, in bytes."""
        return SERVERLESS_PAYLOAD_LIMIT if self.serverless else self.max_payload_bytes

    @property
    def multi_model(self) -> bool:
        """Whether this is a multi-model endpoint (TargetModel required)."""
        return self.cache.model_prefix is not None

    @property
    def log_group(self) -> str:
        """The CloudWatch log group SageMaker would write the endpoint's logs to."""
        return f"/aws/sagemaker/Endpoints/{self.endpoint_name}"

    @property
    def log_stream_arn(self) -> str:
        """A CloudWatch-style ARN for ``ModelError.LogStreamArn``."""
        return (
            f"arn:aws:logs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:log-group:{self.log_group}"
            f":log-stream:{self.variant_name}/local"
        )


def _flag(environ: Mapping[str, str], key: str) -> bool:
    raw = (environ.get(key) or "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


def load_local_settings(
    environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
) -> LocalSettings:
    """Read :class:`LocalSettings` (and its cache settings) from ``environ``, once.

    Args:
        environ: usually ``os.environ``.
        overrides: field values that win over the environment (command-line options);
            cache fields are given by their :class:`CacheSettings` names.

    Raises:
        ConfigError: a value cannot be used.
    """
    overrides = dict(overrides or {})
    cache = load_cache_settings(environ)
    cache_fields = {
        key: overrides.pop(key)
        for key in list(overrides)
        if key in CacheSettings.__dataclass_fields__
    }
    port_raw = (environ.get(PORT) or "").strip()
    try:
        port = int(port_raw) if port_raw else 8080
    except ValueError:
        raise ConfigError(f"{PORT} must be a port number, got {port_raw!r}") from None
    values: dict[str, object] = {
        "endpoint_name": (environ.get(ENDPOINT_NAME) or "").strip() or DEFAULT_ENDPOINT_NAME,
        "bind": (environ.get(BIND) or "").strip() or "127.0.0.1",
        "port": port,
        "model_server_url": (environ.get(MODEL_SERVER_URL) or "").strip() or None,
        "watch": _flag(environ, WATCH),
        "async_output_path": (environ.get(ASYNC_OUTPUT_PATH) or "").strip() or None,
        "async_failure_path": (environ.get(ASYNC_FAILURE_PATH) or "").strip() or None,
        "async_success_topic": (environ.get(ASYNC_SUCCESS_TOPIC) or "").strip() or None,
        "async_error_topic": (environ.get(ASYNC_ERROR_TOPIC) or "").strip() or None,
    }
    concurrency_raw = (environ.get(ASYNC_MAX_CONCURRENCY) or "").strip()
    if concurrency_raw:
        try:
            values["async_max_concurrency"] = int(concurrency_raw)
        except ValueError:
            raise ConfigError(
                f"{ASYNC_MAX_CONCURRENCY} must be an integer, got {concurrency_raw!r}"
            ) from None
    values.update(overrides)
    values["cache_dir_set"] = bool(environ.get(CACHE_DIR)) or "cache_dir" in cache_fields
    if values.get("model_dir") is not None and "model_prefix" not in cache_fields:
        cache = replace(cache, model_prefix=None)  # single-model: the prefix does not apply
    return LocalSettings(cache=replace(cache, **cache_fields), **values)  # type: ignore[arg-type]

"""Everything the stack can be told, validated once at synth time.

:func:`settings_from_context` reads the CDK context (``cdk.json`` or ``-c key=value``)
into a frozen :class:`EndpointSettings`; constructing one validates it, so an invalid
combination (a GPU instance with a multi-model endpoint, say) fails ``cdk synth`` with a
``ValueError`` that names the fix, before anything reaches CloudFormation.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scorer_infra import container_env, emf_metrics
from scorer_infra.hosting import (
    ARCHIVE_SUFFIXES,
    SAGEMAKER_NAME,
    AsyncSettings,
    DataCaptureSettings,
    InferenceComponentSettings,
    ServerlessSettings,
    TransformSettings,
    check_component_archives,
    check_range,
)
from scorer_infra.image import EcrImage, default_ecr_image, parse_ecr_image_uri, read_image_detail
from scorer_infra.instance_types import Hardware, InstanceType, parse_instance_type
from scorer_infra.s3_location import S3Prefix, parse_s3_prefix

_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Mode(enum.Enum):
    """The two ways the stack deploys the image."""

    #: SageMaker multi-model endpoint (``Mode: MultiModel``): the platform loads models.
    CPU_MULTI_MODEL = "cpu-multi-model"
    #: single-model endpoint whose container loads models from the prefix itself.
    GPU_SELF_MANAGED = "gpu-self-managed"
    #: serverless endpoint (ServerlessConfig, no instances), the container's own cache
    SERVERLESS = "serverless"
    #: one inference component per model archive, each served through the single-model
    #: contract, on instances SageMaker scales (ManagedInstanceScaling)
    INFERENCE_COMPONENTS = "inference-components"
    #: asynchronous endpoint (AsyncInferenceConfig): queued, S3 in and out, scales to zero
    ASYNC = "async"


#: modes whose container loads models from the prefix itself (SCORER_MODEL_PREFIX)
SELF_MANAGED_MODES = frozenset({Mode.GPU_SELF_MANAGED, Mode.SERVERLESS, Mode.ASYNC})


DEFAULT_INSTANCE_TYPES: Mapping[Mode, str] = {
    Mode.CPU_MULTI_MODEL: "ml.c5.2xlarge",
    Mode.GPU_SELF_MANAGED: "ml.g5.xlarge",
    Mode.INFERENCE_COMPONENTS: "ml.g5.xlarge",
    Mode.ASYNC: "ml.c5.2xlarge",
}
TRAFFIC_ROUTINGS = ("ALL_AT_ONCE", "CANARY", "LINEAR")
#: MetricsConfig.MetricPublishFrequencyInSeconds (SageMaker API, CloudFormation schema)
PUBLISH_FREQUENCIES = (10, 30, 60, 120, 180, 240, 300)
#: per-model alarms come in pairs; this keeps the stack far below CloudFormation's 500
#: resources and the alarm bill visible
MAX_ALARM_MODELS = 50


@dataclass(frozen=True)
class CacheSettings:
    """The container's self-managed model cache (``gpu-self-managed`` mode only)."""

    default_model: str | None = None
    max_models: int | None = None
    gpu_memory_fraction: float | None = None

    def is_set(self) -> bool:
        """Whether any cache setting was given."""
        return any(
            v is not None for v in (self.default_model, self.max_models, self.gpu_memory_fraction)
        )


@dataclass(frozen=True)
class ScalingSettings:
    """Application Auto Scaling target tracking on invocations per instance."""

    enabled: bool = True
    min_instances: int = 1
    max_instances: int = 4
    #: SageMakerVariantInvocationsPerInstance target: invocations per instance per minute
    target_invocations_per_instance: float = 600.0
    scale_in_cooldown_seconds: int = 300
    scale_out_cooldown_seconds: int = 60


@dataclass(frozen=True)
class AlarmSettings:
    """CloudWatch alarm thresholds (SageMaker reports latencies in microseconds)."""

    errors_5xx_per_minute: float = 5.0
    model_latency_ms: float = 1000.0
    model_loading_wait_ms: float = 30_000.0
    cache_hit_rate_min: float = 0.5
    #: per instance, 0-100 per GPU (a 4-GPU instance reports up to 400)
    gpu_memory_percent: float = 90.0
    evaluation_periods: int = 3
    topic_arn: str | None = None
    #: per-model alarms on the container's EMF metrics: ``model`` dimension values as the
    #: container writes them (any mode) ...
    models: tuple[str, ...] = ()
    #: ... and TargetModel keys, whose dimension value the stack derives (gpu-self-managed)
    target_models: tuple[str, ...] = ()
    #: 5xx answers per model, percent of its answered requests
    model_5xx_percent: float = 5.0
    #: p99 of the time in the worker per model (RequestDuration), milliseconds
    model_p99_ms: float = 1000.0


@dataclass(frozen=True)
class ContainerMetricsSettings:
    """What SageMaker scrapes from the container and how often (detailed observability)."""

    #: write ``ContainerMetricsConfig`` on the model's container (an escape hatch: neither
    #: the CDK nor cfn-lint's schema has the property yet, see docs/infra.md)
    enabled: bool = False
    path: str = "/metrics"
    #: MetricsConfig (endpoint config) and, when enabled, the metrics endpoint's frequency
    publish_frequency_seconds: int | None = None
    #: MetricsConfig.EnableDetailedObservability; SageMaker's default when unset (true for
    #: new configs), set true when ``enabled``
    detailed_observability: bool | None = None


@dataclass(frozen=True)
class DeploymentSettings:
    """The endpoint's blue/green update policy."""

    traffic_routing: str = "ALL_AT_ONCE"
    #: canary size or linear step, percent of the fleet (CANARY and LINEAR only)
    traffic_step_percent: int = 25
    #: wait between traffic shifts, during which the rollback alarms are watched
    bake_seconds: int = 300
    termination_wait_seconds: int = 0
    max_execution_seconds: int | None = None


@dataclass(frozen=True)
class EndpointSettings:
    """One endpoint: image, mode, hardware, model files, scaling, alarms and updates."""

    image_uri: str | None = None
    mode: Mode = Mode.CPU_MULTI_MODEL
    model_data_prefix: str | None = None
    model_archives_dir: Path | None = None
    model_archive_file: Path | None = None
    prune_model_archives: bool = False
    model_data_kms_key_arn: str | None = None
    endpoint_name: str = "scorer"
    variant_name: str = "AllTraffic"
    instance_type: str | None = None
    initial_instance_count: int = 1
    environment: Mapping[str, str] = field(default_factory=dict)
    cache: CacheSettings = field(default_factory=CacheSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings)
    startup_health_check_timeout_seconds: int | None = None
    metrics_namespace: str = emf_metrics.DEFAULT_NAMESPACE
    container_metrics: ContainerMetricsSettings = field(default_factory=ContainerMetricsSettings)
    serverless: ServerlessSettings = field(default_factory=ServerlessSettings)
    inference_components: InferenceComponentSettings = field(
        default_factory=InferenceComponentSettings
    )
    data_capture: DataCaptureSettings = field(default_factory=DataCaptureSettings)
    asynchronous: AsyncSettings = field(default_factory=AsyncSettings)
    transform: TransformSettings = field(default_factory=TransformSettings)

    def __post_init__(self) -> None:
        _check_serverless(self)
        if self.instance_type is None and self.mode is not Mode.SERVERLESS:
            object.__setattr__(self, "instance_type", DEFAULT_INSTANCE_TYPES[self.mode])
        object.__setattr__(self, "environment", dict(self.environment))
        if self.image_uri is not None:
            parse_ecr_image_uri(self.image_uri)
        _check_name("endpoint_name", self.endpoint_name)
        _check_name("variant_name", self.variant_name)
        if self.instance is not None:
            _check_hardware(self.mode, self.instance)
        _check_model_files(self)
        _check_cache(self.mode, self.cache)
        _check_environment(self.environment)
        _check_counts(self)
        _check_alarms(self.alarms)
        _check_deployment(self.deployment)
        if self.startup_health_check_timeout_seconds is not None:
            check_range(
                "startup_health_check_timeout_seconds",
                self.startup_health_check_timeout_seconds,
                60,
                3600,
            )
        namespace = self.metrics_namespace
        if not emf_metrics.NAMESPACE.match(namespace) or namespace.startswith("AWS/"):
            raise ValueError(
                "metrics_namespace must be a CloudWatch namespace the container accepts (at "
                f"most 255 of A-Z a-z 0-9 space . _ / # : -, not starting AWS/), got {namespace!r}"
            )
        _check_container_metrics(self.container_metrics)
        _check_model_alarms(self)
        _check_inference_components(self)
        _check_data_capture(self)
        _check_async(self)
        _check_transform(self)

    @property
    def image(self) -> EcrImage:
        """The image to run; without ``image_uri``, ``scorer:latest`` in the stack's account."""
        if self.image_uri is None:
            return default_ecr_image()
        return parse_ecr_image_uri(self.image_uri)

    @property
    def instance(self) -> InstanceType | None:
        """The parsed instance type; None for a serverless endpoint, which has none."""
        if self.instance_type is None:
            return None
        return parse_instance_type(self.instance_type)

    @property
    def alarm_model_dimensions(self) -> tuple[str, ...]:
        """The ``model`` dimension values that get per-model alarms, in the order given."""
        derived = [emf_metrics.target_model_dimension(k) for k in self.alarms.target_models]
        return tuple(dict.fromkeys([*self.alarms.models, *derived]))

    @property
    def model_prefix(self) -> S3Prefix | None:
        """The model data prefix given, if any (the stack makes a bucket otherwise)."""
        if self.model_data_prefix is None:
            return None
        return parse_s3_prefix(self.model_data_prefix)


def _check_name(key: str, value: str) -> None:
    if not SAGEMAKER_NAME.match(value):
        raise ValueError(
            f"{key} {value!r} is not a valid SageMaker name: 1-63 letters, digits and "
            "hyphens, starting and ending with a letter or digit"
        )


def _check_hardware(mode: Mode, instance: InstanceType) -> None:
    if instance.hardware is Hardware.ACCELERATOR:
        raise ValueError(
            f"instance type {instance.name} has AWS Inferentia/Trainium/Gaudi accelerators, "
            "which the scorer image cannot use (it runs on CPUs or NVIDIA GPUs). Fix: choose "
            "a CPU type such as ml.c5.2xlarge with mode cpu-multi-model, or a GPU type such "
            "as ml.g5.xlarge with mode gpu-self-managed."
        )
    if mode is Mode.CPU_MULTI_MODEL and instance.hardware is Hardware.GPU:
        raise ValueError(
            f"instance type {instance.name} is a GPU instance, but mode cpu-multi-model "
            "creates a SageMaker multi-model endpoint (Mode: MultiModel), and SageMaker "
            "supports bring-your-own-container multi-model endpoints on CPU instances only "
            "(GPU multi-model endpoints need its Triton or TorchServe containers). Fix: pass "
            "-c mode=gpu-self-managed to serve many models on this GPU from the container's "
            "own cache behind a single-model endpoint, or pick a CPU instance type such as "
            "-c instance_type=ml.c5.2xlarge."
        )


def _outside_mode(
    s: EndpointSettings, mode: Mode, *, given: bool, keys: str, multi_model_fix: str
) -> bool:
    """Whether ``s`` is in another mode than ``mode``, refusing there ``keys`` ``given``.

    ``multi_model_fix`` follows the refusal in mode cpu-multi-model: why the mode cannot
    host a multi-model endpoint, and what to do instead.
    """
    if s.mode is mode:
        return False
    if given:
        raise ValueError(
            f"{keys} apply only with -c mode={mode.value}, not mode {s.mode.value}"
            + (f": {multi_model_fix}" if s.mode is Mode.CPU_MULTI_MODEL else "")
        )
    return True


def _check_serverless(s: EndpointSettings) -> None:
    if _outside_mode(
        s,
        Mode.SERVERLESS,
        given=s.serverless.is_set(),
        keys="serverless_* settings",
        multi_model_fix="SageMaker serverless endpoints do not host multi-model endpoints "
        "(Mode: MultiModel). Fix: -c mode=serverless, where the container's own "
        "cache serves the models under model_data_prefix",
    ):
        return
    if s.instance_type is not None:
        gpu = parse_instance_type(s.instance_type).hardware is not Hardware.CPU
        raise ValueError(
            f"mode serverless has no instances, so instance_type {s.instance_type} does not "
            "apply"
            + (
                ", and SageMaker serverless endpoints have no GPUs or other accelerators. Fix: "
                "-c mode=gpu-self-managed or -c mode=inference-components for a GPU, or drop "
                "instance_type and size the endpoint with serverless_memory_mb"
                if gpu
                else ". Fix: drop instance_type; size the endpoint with serverless_memory_mb "
                "and serverless_max_concurrency"
            )
        )
    if s.initial_instance_count != 1 or (s.scaling.min_instances, s.scaling.max_instances) != (
        1,
        4,
    ):
        raise ValueError(
            "initial_instance_count, min_instances and max_instances do not apply to mode "
            "serverless, which has no instances; autoscaling there scales provisioned "
            "concurrency (serverless_min/max_provisioned_concurrency)"
        )
    if s.cache.gpu_memory_fraction is not None:
        raise ValueError(
            "cache_gpu_memory_fraction does not apply to mode serverless, which has no GPU"
        )
    s.serverless.check()


def _check_inference_components(s: EndpointSettings) -> None:
    ic = s.inference_components
    if s.mode is not Mode.INFERENCE_COMPONENTS:
        if ic.is_set():
            raise ValueError(
                "inference_components and the ic_* settings apply only with "
                "-c mode=inference-components"
            )
        return
    check_component_archives(s.endpoint_name, ic.archives or ())
    if s.model_archive_file is not None:
        raise ValueError(
            "mode inference-components reads each component's archive from "
            "model_data_prefix; model_archive_file (an asset under its digest) does not "
            "apply. Fix: model_archives_dir, or copy the archives to the prefix"
        )
    if s.cache.is_set():
        raise ValueError(
            "default_model and the cache_* settings configure the container's own cache; "
            "each inference component serves one model, so they do not apply"
        )
    instance = s.instance
    assert instance is not None
    gpu = instance.hardware is Hardware.GPU
    accelerators = ic.accelerators
    if gpu and accelerators is not None and accelerators < 1:
        raise ValueError(
            f"ic_accelerators must be at least 1 on the GPU instance {instance.name}: an "
            "inference component gets whole accelerators (NumberOfAcceleratorDevicesRequired "
            ">= 1). Several small models that should share one GPU belong in "
            "-c mode=gpu-self-managed"
        )
    if not gpu and accelerators:
        raise ValueError(
            f"ic_accelerators applies to GPU instances; {instance.name} has none. Fix: a GPU "
            "instance type such as ml.g5.2xlarge, or drop ic_accelerators"
        )
    if ic.cores < 0.25:
        raise ValueError(f"ic_cpu_cores must be at least 0.25, got {ic.cores}")
    if ic.memory < 128:
        raise ValueError(f"ic_memory_mb must be at least 128, got {ic.memory}")
    low, high = ic.copy_bounds
    scaling = s.scaling
    if ic.copy_count < (0 if ic.scales_to_zero else 1):
        raise ValueError(f"ic_copies must be at least 1, got {ic.copy_count}")
    if scaling.enabled and not ((0 if ic.scales_to_zero else 1) <= low <= ic.copy_count <= high):
        raise ValueError(
            f"need ic_min_copies <= ic_copies <= ic_max_copies, got {low}, {ic.copy_count}, "
            f"{high} (ic_min_copies may be 0 only with ic_min_instances=0)"
        )
    if ic.target_invocations <= 0:
        raise ValueError("ic_target_invocations_per_copy must be positive")
    min_instances = ic.min_instances if ic.min_instances is not None else scaling.min_instances
    max_instances = ic.max_instances if ic.max_instances is not None else scaling.max_instances
    if not 0 <= min_instances <= max_instances or max_instances < 1:
        raise ValueError(
            f"need 0 <= ic_min_instances <= ic_max_instances and ic_max_instances >= 1, got "
            f"{min_instances} and {max_instances}"
        )
    if ic.scales_to_zero and not scaling.enabled:
        raise ValueError(
            "ic_min_instances=0 (scale to zero) needs autoscaling: the components must scale "
            "to zero copies and a step policy must wake them; drop autoscaling=false"
        )


def _check_async(s: EndpointSettings) -> None:
    settings = s.asynchronous
    if _outside_mode(
        s,
        Mode.ASYNC,
        given=settings.is_set(),
        keys="the async_* settings",
        multi_model_fix="SageMaker asynchronous inference does not support multi-model "
        "endpoints (InvokeEndpointAsync has no TargetModel). Fix: -c mode=async, "
        "a single-model endpoint whose container serves the models under "
        "model_data_prefix (default_model, or target_model in CustomAttributes)",
    ):
        return
    settings.check()
    for key, url in (
        ("async_output_path", settings.output_path),
        ("async_failure_path", settings.failure_path),
        ("async_input_path", settings.input_path),
    ):
        if url is not None:
            parse_s3_prefix(url, key=key)


def _check_transform(s: EndpointSettings) -> None:
    transform = s.transform
    if not transform.is_set():
        return
    if s.mode not in SELF_MANAGED_MODES:
        raise ValueError(
            f"transform_input_path/transform_output_path prepare the stack's model for batch "
            f"transform, which runs a single-model container; mode {s.mode.value} has "
            + (
                "a multi-model model. Fix: -c mode=gpu-self-managed or -c mode=async"
                if s.mode is Mode.CPU_MULTI_MODEL
                else "no model. Fix: -c mode=gpu-self-managed or -c mode=async"
            )
        )
    if transform.input_path is None or transform.output_path is None:
        raise ValueError("give both transform_input_path and transform_output_path")
    parse_s3_prefix(transform.input_path, key="transform_input_path")
    parse_s3_prefix(transform.output_path, key="transform_output_path")


def _check_data_capture(s: EndpointSettings) -> None:
    capture = s.data_capture
    capture.check()
    if capture.destination is not None:
        parse_s3_prefix(capture.destination, key="data_capture_s3_uri")
    if capture.enabled and s.mode is Mode.SERVERLESS:
        raise ValueError(
            "data capture is not supported on serverless endpoints (SageMaker developer "
            "guide, Serverless Inference: unsupported features). Fix: drop "
            "data_capture_percent, or deploy on instances with -c mode=gpu-self-managed "
            "(or cpu-multi-model) to capture requests"
        )


def _check_model_files(s: EndpointSettings) -> None:
    if s.model_data_prefix is not None:
        parse_s3_prefix(s.model_data_prefix)
    if s.model_archive_file is not None:
        if s.model_data_prefix is not None or s.model_archives_dir is not None:
            raise ValueError(
                "model_archive_file (an S3 asset, stored under its content digest in the CDK "
                "assets bucket) cannot be combined with model_data_prefix or "
                "model_archives_dir: an endpoint reads models from one prefix. Fix: use "
                "model_archives_dir to copy archives into model_data_prefix instead."
            )
        if not s.model_archive_file.is_file():
            raise ValueError(f"model_archive_file {str(s.model_archive_file)!r} is not a file")
        if not s.model_archive_file.name.endswith(ARCHIVE_SUFFIXES):
            raise ValueError(
                f"model_archive_file {str(s.model_archive_file)!r} is not a .tar.gz archive "
                "(SageMaker model data is a gzipped tar file)"
            )
    if s.model_archives_dir is not None and not s.model_archives_dir.is_dir():
        raise ValueError(f"model_archives_dir {str(s.model_archives_dir)!r} is not a directory")
    if s.prune_model_archives:
        if s.model_archives_dir is None:
            raise ValueError("prune_model_archives applies only with model_archives_dir")
        prefix = s.model_prefix
        if prefix is not None and not prefix.key_prefix:
            raise ValueError(
                "prune_model_archives with a bucket-root model_data_prefix would delete every "
                "other object in the bucket; give a prefix such as s3://bucket/models/"
            )
    if s.model_data_kms_key_arn is not None and not s.model_data_kms_key_arn.startswith("arn:"):
        raise ValueError("model_data_kms_key_arn must be a KMS key ARN (arn:...:kms:...:key/...)")


def _check_cache(mode: Mode, cache: CacheSettings) -> None:
    if mode is Mode.CPU_MULTI_MODEL and cache.is_set():
        raise ValueError(
            "default_model, cache_max_models and cache_gpu_memory_fraction configure the "
            "container's own model cache and apply only with -c mode=gpu-self-managed (or "
            "serverless); on a multi-model endpoint SageMaker loads and unloads models itself"
        )
    if cache.max_models is not None and cache.max_models < 1:
        raise ValueError("cache_max_models must be at least 1")
    fraction = cache.gpu_memory_fraction
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError("cache_gpu_memory_fraction must lie in (0, 1]")


def _check_environment(environment: Mapping[str, str]) -> None:
    total = 0
    for key, value in environment.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise ValueError(f"environment variable name {key!r} is not a valid name")
        if not isinstance(value, str):
            raise ValueError(f"environment variable {key} must be a string, got {value!r}")
        if key in container_env.RESERVED:
            raise ValueError(
                f"environment variable {key} is set by the stack; use the context key "
                f"{container_env.RESERVED[key]!r} instead"
            )
        sizes = (len(key.encode()), len(value.encode()))
        if max(sizes) > container_env.MAX_ITEM_BYTES:
            raise ValueError(
                f"environment variable {key}: names and values are limited to "
                f"{container_env.MAX_ITEM_BYTES} bytes"
            )
        total += sum(sizes)
    if total > container_env.MAX_TOTAL_BYTES:
        raise ValueError("the container environment exceeds SageMaker's 32 KB limit")


def _check_counts(s: EndpointSettings) -> None:
    scaling = s.scaling
    if s.initial_instance_count < 1:
        raise ValueError("initial_instance_count must be at least 1")
    lowest = 0 if s.mode is Mode.ASYNC else 1  # only an async endpoint scales to zero
    if not lowest <= scaling.min_instances <= scaling.max_instances or scaling.max_instances < 1:
        raise ValueError(
            f"need {lowest} <= min_instances <= max_instances, got {scaling.min_instances} and "
            f"{scaling.max_instances}"
            + (" (min_instances 0, scale to zero, needs -c mode=async)" if lowest else "")
        )
    if scaling.enabled and not (
        scaling.min_instances <= s.initial_instance_count <= scaling.max_instances
    ):
        raise ValueError(
            f"initial_instance_count {s.initial_instance_count} must lie within "
            f"[min_instances, max_instances] = [{scaling.min_instances}, "
            f"{scaling.max_instances}]"
        )
    if scaling.target_invocations_per_instance <= 0:
        raise ValueError("target_invocations_per_instance must be positive")
    if scaling.scale_in_cooldown_seconds < 0 or scaling.scale_out_cooldown_seconds < 0:
        raise ValueError("scaling cooldowns must not be negative")


def _check_positive(*values: tuple[str, float]) -> None:
    """Raise ValueError for the first (context key, value) pair whose value is not positive."""
    for key, value in values:
        if value <= 0:
            raise ValueError(f"{key} must be positive, got {value}")


def _check_alarms(alarms: AlarmSettings) -> None:
    _check_positive(
        ("alarm_5xx_per_minute", alarms.errors_5xx_per_minute),
        ("alarm_model_latency_ms", alarms.model_latency_ms),
        ("alarm_model_loading_wait_ms", alarms.model_loading_wait_ms),
        ("alarm_gpu_memory_percent", alarms.gpu_memory_percent),
    )
    if not 0 < alarms.cache_hit_rate_min <= 1:
        raise ValueError("alarm_cache_hit_rate_min is a ratio in (0, 1]")
    if alarms.evaluation_periods < 1:
        raise ValueError("alarm_evaluation_periods must be at least 1")


def _check_container_metrics(m: ContainerMetricsSettings) -> None:
    path = m.path
    if not path.startswith("/") or len(path) > 256 or ".." in path.split("/"):
        raise ValueError(
            f"metrics_endpoint_path must start with '/', hold at most 256 characters and no "
            f"'..' component (ContainerMetricsConfig), got {path!r}"
        )
    frequency = m.publish_frequency_seconds
    if frequency is not None and frequency not in PUBLISH_FREQUENCIES:
        choices = ", ".join(str(f) for f in PUBLISH_FREQUENCIES)
        raise ValueError(f"metrics_publish_frequency_seconds must be one of {choices}")
    if m.enabled and m.detailed_observability is False:
        raise ValueError(
            "container_metrics_config asks SageMaker to scrape the container, which is "
            "detailed observability; it cannot be combined with detailed_observability=false"
        )


def _check_model_alarms(s: EndpointSettings) -> None:
    alarms = s.alarms
    for model in alarms.models:
        if not emf_metrics.MODEL_NAME.match(model):
            raise ValueError(
                f"alarm_models: {model!r} is not a model name the container serves (1-128 of "
                "A-Z a-z 0-9 _ . -, starting with a letter or digit)"
            )
    if alarms.target_models and s.mode not in SELF_MANAGED_MODES:
        raise ValueError(
            "alarm_target_models applies only with -c mode=gpu-self-managed, where the "
            "container names each model after its TargetModel key; on a multi-model "
            "endpoint SageMaker registers models under opaque names: list those (from "
            "/metrics, the request log or CloudWatch) in alarm_models"
        )
    for key in alarms.target_models:
        emf_metrics.check_target_model(key)
    count = len(s.alarm_model_dimensions)
    if count > MAX_ALARM_MODELS:
        raise ValueError(
            f"{count} models for per-model alarms; at most {MAX_ALARM_MODELS} (two alarms each)"
        )
    _check_positive(
        ("alarm_model_5xx_percent", alarms.model_5xx_percent),
        ("alarm_model_p99_ms", alarms.model_p99_ms),
    )
    if alarms.model_5xx_percent > 100:
        raise ValueError("alarm_model_5xx_percent is a percentage in (0, 100]")
    # values the container would refuse at start fail synth instead
    emf_metrics.emf_interval_seconds(s.environment)
    if not emf_metrics.emf_enabled(s.environment) and count:
        raise ValueError(
            f"per-model alarms watch the container's EMF metrics, but the environment sets "
            f"{container_env.EMF} off; drop alarm_models/alarm_target_models or turn EMF on"
        )


def _check_deployment(d: DeploymentSettings) -> None:
    if d.traffic_routing not in TRAFFIC_ROUTINGS:
        raise ValueError(
            f"traffic_routing {d.traffic_routing!r} is not one of {', '.join(TRAFFIC_ROUTINGS)}"
        )
    check_range("traffic_step_percent", d.traffic_step_percent, 1, 100)
    check_range("bake_seconds", d.bake_seconds, 0, 3600)
    check_range("termination_wait_seconds", d.termination_wait_seconds, 0, 3600)
    if d.max_execution_seconds is not None:
        check_range("max_execution_seconds", d.max_execution_seconds, 600, 14400)


# --- reading the CDK context -------------------------------------------------------------

ContextGetter = Callable[[str], Any]


def settings_from_context(get: ContextGetter, base_dir: Path | None = None) -> EndpointSettings:
    """Build validated settings from CDK context values (strings from ``-c`` or JSON values).

    Args:
        get: returns the context value for a key, or ``None`` (``app.node.try_get_context``).
        base_dir: directory that relative file paths are resolved against (default: the
            current directory, which is where ``cdk.json`` lies when the CDK CLI runs).

    Raises:
        ValueError: a value is malformed, or the combination is invalid.
    """
    ctx = _Context(get, base_dir or Path.cwd())
    image_uri = ctx.text("image_uri")
    image_detail = ctx.path("image_detail")
    if image_uri is not None and image_detail is not None:
        raise ValueError("give either image_uri or image_detail, not both")
    if image_detail is not None:
        image_uri = read_image_detail(image_detail)
    mode_text = ctx.text("mode") or Mode.CPU_MULTI_MODEL.value
    try:
        mode = Mode(mode_text)
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise ValueError(f"mode {mode_text!r} is not one of {modes}") from None
    d_scaling, d_alarms, d_deploy = ScalingSettings(), AlarmSettings(), DeploymentSettings()
    return EndpointSettings(
        image_uri=image_uri,
        mode=mode,
        model_data_prefix=ctx.text("model_data_prefix"),
        model_archives_dir=ctx.path("model_archives_dir"),
        model_archive_file=ctx.path("model_archive_file"),
        prune_model_archives=ctx.boolean("prune_model_archives", False),
        model_data_kms_key_arn=ctx.text("model_data_kms_key_arn"),
        endpoint_name=ctx.text("endpoint_name") or "scorer",
        variant_name=ctx.text("variant_name") or "AllTraffic",
        instance_type=ctx.text("instance_type"),
        initial_instance_count=ctx.integer("initial_instance_count", 1),
        environment=ctx.mapping("environment"),
        cache=CacheSettings(
            default_model=ctx.text("default_model"),
            max_models=ctx.optional_integer("cache_max_models"),
            gpu_memory_fraction=ctx.optional_number("cache_gpu_memory_fraction"),
        ),
        scaling=ScalingSettings(
            enabled=ctx.boolean("autoscaling", d_scaling.enabled),
            # an async endpoint scales to zero unless told otherwise
            min_instances=ctx.integer(
                "min_instances", 0 if mode is Mode.ASYNC else d_scaling.min_instances
            ),
            max_instances=ctx.integer("max_instances", d_scaling.max_instances),
            target_invocations_per_instance=ctx.number(
                "target_invocations_per_instance", d_scaling.target_invocations_per_instance
            ),
            scale_in_cooldown_seconds=ctx.integer(
                "scale_in_cooldown_seconds", d_scaling.scale_in_cooldown_seconds
            ),
            scale_out_cooldown_seconds=ctx.integer(
                "scale_out_cooldown_seconds", d_scaling.scale_out_cooldown_seconds
            ),
        ),
        alarms=AlarmSettings(
            errors_5xx_per_minute=ctx.number(
                "alarm_5xx_per_minute", d_alarms.errors_5xx_per_minute
            ),
            model_latency_ms=ctx.number("alarm_model_latency_ms", d_alarms.model_latency_ms),
            model_loading_wait_ms=ctx.number(
                "alarm_model_loading_wait_ms", d_alarms.model_loading_wait_ms
            ),
            cache_hit_rate_min=ctx.number("alarm_cache_hit_rate_min", d_alarms.cache_hit_rate_min),
            gpu_memory_percent=ctx.number("alarm_gpu_memory_percent", d_alarms.gpu_memory_percent),
            evaluation_periods=ctx.integer("alarm_evaluation_periods", d_alarms.evaluation_periods),
            topic_arn=ctx.text("alarm_topic_arn"),
            models=ctx.text_list("alarm_models"),
            target_models=ctx.text_list("alarm_target_models"),
            model_5xx_percent=ctx.number("alarm_model_5xx_percent", d_alarms.model_5xx_percent),
            model_p99_ms=ctx.number("alarm_model_p99_ms", d_alarms.model_p99_ms),
        ),
        deployment=DeploymentSettings(
            traffic_routing=(ctx.text("traffic_routing") or d_deploy.traffic_routing).upper(),
            traffic_step_percent=ctx.integer("traffic_step_percent", d_deploy.traffic_step_percent),
            bake_seconds=ctx.integer("bake_seconds", d_deploy.bake_seconds),
            termination_wait_seconds=ctx.integer(
                "termination_wait_seconds", d_deploy.termination_wait_seconds
            ),
            max_execution_seconds=ctx.optional_integer("max_execution_seconds"),
        ),
        startup_health_check_timeout_seconds=ctx.optional_integer(
            "startup_health_check_timeout_seconds"
        ),
        metrics_namespace=ctx.text("metrics_namespace") or emf_metrics.DEFAULT_NAMESPACE,
        container_metrics=ContainerMetricsSettings(
            enabled=ctx.boolean("container_metrics_config", False),
            path=ctx.text("metrics_endpoint_path") or "/metrics",
            publish_frequency_seconds=ctx.optional_integer("metrics_publish_frequency_seconds"),
            detailed_observability=ctx.optional_boolean("detailed_observability"),
        ),
        serverless=ServerlessSettings(
            memory_mb=ctx.optional_integer("serverless_memory_mb"),
            max_concurrency=ctx.optional_integer("serverless_max_concurrency"),
            provisioned_concurrency=ctx.optional_integer("serverless_provisioned_concurrency"),
            min_provisioned_concurrency=ctx.optional_integer(
                "serverless_min_provisioned_concurrency"
            ),
            max_provisioned_concurrency=ctx.optional_integer(
                "serverless_max_provisioned_concurrency"
            ),
            target_utilization=ctx.optional_number("serverless_target_utilization"),
        ),
        asynchronous=AsyncSettings(
            output_path=ctx.text("async_output_path"),
            failure_path=ctx.text("async_failure_path"),
            input_path=ctx.text("async_input_path"),
            success_topic_arn=ctx.text("async_success_topic_arn"),
            error_topic_arn=ctx.text("async_error_topic_arn"),
            include_response=ctx.optional_boolean("async_include_response"),
            max_concurrent_invocations=ctx.optional_integer("async_max_concurrent_invocations"),
            target_backlog_per_instance=ctx.optional_number("async_target_backlog_per_instance"),
        ),
        transform=TransformSettings(
            input_path=ctx.text("transform_input_path"),
            output_path=ctx.text("transform_output_path"),
        ),
        data_capture=DataCaptureSettings(
            percent=ctx.optional_integer("data_capture_percent"),
            destination=ctx.text("data_capture_s3_uri"),
            mode=ctx.text("data_capture_mode"),
            json_content_types=ctx.text_list("data_capture_json_content_types") or None,
            csv_content_types=ctx.text_list("data_capture_csv_content_types") or None,
            kms_key_arn=ctx.text("data_capture_kms_key_arn"),
        ),
        inference_components=InferenceComponentSettings(
            archives=ctx.text_list("inference_components") or None,
            cpu_cores=ctx.optional_number("ic_cpu_cores"),
            memory_mb=ctx.optional_integer("ic_memory_mb"),
            accelerators=ctx.optional_integer("ic_accelerators"),
            copies=ctx.optional_integer("ic_copies"),
            min_copies=ctx.optional_integer("ic_min_copies"),
            max_copies=ctx.optional_integer("ic_max_copies"),
            target_invocations_per_copy=ctx.optional_number("ic_target_invocations_per_copy"),
            min_instances=ctx.optional_integer("ic_min_instances"),
            max_instances=ctx.optional_integer("ic_max_instances"),
        ),
    )


class _Context:
    """Typed reads of context values; ``-c`` gives strings, ``cdk.json`` gives JSON values."""

    def __init__(self, get: ContextGetter, base_dir: Path) -> None:
        self._get = get
        self._base_dir = base_dir

    def _raw(self, key: str) -> Any:
        value = self._get(key)
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def text(self, key: str) -> str | None:
        value = self._raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"context {key} must be a string, got {value!r}")
        return value.strip()

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def boolean(self, key: str, default: bool) -> bool:
        value = self.optional_boolean(key)
        return default if value is None else value

    def optional_boolean(self, key: str) -> bool | None:
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"context {key} must be true or false, got {value!r}")

    def optional_number(self, key: str) -> float | None:
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"context {key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"context {key} must be a number, got {value!r}") from None

    def number(self, key: str, default: float) -> float:
        value = self.optional_number(key)
        return default if value is None else value

    def optional_integer(self, key: str) -> int | None:
        value = self.optional_number(key)
        if value is None:
            return None
        if not value.is_integer():
            raise ValueError(f"context {key} must be a whole number, got {value}")
        return int(value)

    def integer(self, key: str, default: int) -> int:
        value = self.optional_integer(key)
        return default if value is None else value

    def text_list(self, key: str) -> tuple[str, ...]:
        """A JSON array of strings (cdk.json, or ``-c key='["a", "b"]'``) or ``-c key=a,b``."""
        value = self._raw(key)
        if value is None:
            return ()
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"context {key} is not a JSON array: {text!r}") from None
            else:
                value = text.split(",")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"context {key} must be a list of strings, got {value!r}")
        return tuple(v.strip() for v in value if v.strip())

    def mapping(self, key: str) -> dict[str, str]:
        value = self._raw(key)
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(
                    f"context {key} must be a JSON object, e.g. "
                    f'-c {key}=\'{{"SCORER_DEVICE": "cuda"}}\''
                ) from None
        if not isinstance(value, dict):
            raise ValueError(f"context {key} must be a JSON object, got {value!r}")
        # numbers are written as the container will read them; anything else must be text
        return {
            str(k): str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in value.items()
        }

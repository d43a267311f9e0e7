"""Settings of SageMaker's other hosting options and of the endpoint's extras.

Serverless, inference components and async endpoints; data capture; what a batch
transform job on the stack's model needs.

Each is a frozen dataclass whose fields are ``None`` when the context did not give them, so
the stack can tell "not asked for" from a default, and refuse a key that does not apply to
the mode (``serverless_memory_mb`` with ``cpu-multi-model``, say). Facts and limits are
from the SageMaker API model (``ServerlessConfig``, ``InferenceComponent*``,
``ManagedInstanceScaling``, ``DataCaptureConfig``, ``AsyncInferenceConfig``) and
Application Auto Scaling's; see docs/infra.md. The checks these and the endpoint's own
settings share (SageMaker names, archive suffixes, ranges) live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

#: ServerlessConfig.MemorySizeInMB: 1024-6144 in steps of 1024
SERVERLESS_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)
#: ServerlessConfig.MaxConcurrency and ProvisionedConcurrency: 1-200
SERVERLESS_MAX_CONCURRENCY = 200
#: a SageMaker name (endpoint, variant, inference component): 1-63 letters, digits and
#: hyphens, starting and ending with a letter or digit
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
#: SageMaker model data is a gzipped tar file
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def _given(settings: Any) -> bool:
    return any(getattr(settings, f.name) is not None for f in fields(settings))


def check_range(key: str, value: float, low: float, high: float) -> None:
    """Raise ValueError unless ``low <= value <= high``; the message names ``key``."""
    if not low <= value <= high:
        raise ValueError(f"{key} must lie in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class ServerlessSettings:
    """``ServerlessConfig`` and the autoscaling of its provisioned concurrency."""

    memory_mb: int | None = None
    max_concurrency: int | None = None
    provisioned_concurrency: int | None = None
    #: autoscaling bounds of DesiredProvisionedConcurrency (only with provisioned concurrency)
    min_provisioned_concurrency: int | None = None
    max_provisioned_concurrency: int | None = None
    #: SageMakerVariantProvisionedConcurrencyUtilization target, a ratio in (0, 1]
    target_utilization: float | None = None

    DEFAULT_MEMORY_MB = 4096
    DEFAULT_MAX_CONCURRENCY = 5
    DEFAULT_TARGET_UTILIZATION = 0.7

    def is_set(self) -> bool:
        """Whether any serverless key was given."""
        return _given(self)

    @property
    def memory(self) -> int:
        return self.DEFAULT_MEMORY_MB if self.memory_mb is None else self.memory_mb

    @property
    def concurrency(self) -> int:
        return (
            self.DEFAULT_MAX_CONCURRENCY if self.max_concurrency is None else self.max_concurrency
        )

    @property
    def provisioned_bounds(self) -> tuple[int, int]:
        """(min, max) of the provisioned concurrency autoscaling."""
        assert self.provisioned_concurrency is not None
        low = self.min_provisioned_concurrency
        high = self.max_provisioned_concurrency
        return (
            self.provisioned_concurrency if low is None else low,
            self.concurrency if high is None else high,
        )

    @property
    def utilization(self) -> float:
        if self.target_utilization is None:
            return self.DEFAULT_TARGET_UTILIZATION
        return self.target_utilization

    def check(self) -> None:
        """Raise ValueError for a value ServerlessConfig or its autoscaling refuses."""
        if self.memory not in SERVERLESS_MEMORY_SIZES:
            sizes = ", ".join(str(s) for s in SERVERLESS_MEMORY_SIZES)
            raise ValueError(
                f"serverless_memory_mb must be one of {sizes} (1024-6144 in steps of 1024, "
                f"ServerlessConfig.MemorySizeInMB), got {self.memory}"
            )
        check_range("serverless_max_concurrency", self.concurrency, 1, SERVERLESS_MAX_CONCURRENCY)
        provisioned = self.provisioned_concurrency
        if provisioned is None:
            if (
                self.min_provisioned_concurrency is not None
                or self.max_provisioned_concurrency is not None
                or self.target_utilization is not None
            ):
                raise ValueError(
                    "serverless_min/max_provisioned_concurrency and "
                    "serverless_target_utilization scale provisioned concurrency; give "
                    "serverless_provisioned_concurrency too"
                )
            return
        if not 1 <= provisioned <= self.concurrency:
            raise ValueError(
                "serverless_provisioned_concurrency must lie in [1, serverless_max_concurrency "
                f"= {self.concurrency}], got {provisioned}"
            )
        low, high = self.provisioned_bounds
        if not 1 <= low <= provisioned <= high <= self.concurrency:
            raise ValueError(
                "need 1 <= serverless_min_provisioned_concurrency <= "
                "serverless_provisioned_concurrency <= serverless_max_provisioned_concurrency "
                f"<= serverless_max_concurrency, got {low}, {provisioned}, {high}, "
                f"{self.concurrency}"
            )
        if not 0 < self.utilization <= 1:
            raise ValueError(
                f"serverless_target_utilization is a ratio in (0, 1], got {self.utilization}"
            )


@dataclass(frozen=True)
class InferenceComponentSettings:
    """One ``AWS::SageMaker::InferenceComponent`` per archive key, on managed instances."""

    #: archive keys under model_data_prefix, one component each
    archives: tuple[str, ...] | None = None
    cpu_cores: float | None = None
    memory_mb: int | None = None
    #: whole accelerators per copy; None: 1 on a GPU instance, none on a CPU one
    accelerators: int | None = None
    copies: int | None = None
    min_copies: int | None = None
    max_copies: int | None = None
    #: SageMakerInferenceComponentInvocationsPerCopy target, invocations per copy per minute
    target_invocations_per_copy: float | None = None
    #: ManagedInstanceScaling bounds; min 0 turns scale to zero on
    min_instances: int | None = None
    max_instances: int | None = None

    DEFAULT_CPU_CORES = 2.0
    DEFAULT_MEMORY_MB = 4096
    DEFAULT_COPIES = 1
    DEFAULT_MAX_COPIES = 4
    DEFAULT_TARGET_INVOCATIONS = 300.0

    def is_set(self) -> bool:
        """Whether any inference-component key was given."""
        return _given(self)

    @property
    def cores(self) -> float:
        return self.DEFAULT_CPU_CORES if self.cpu_cores is None else self.cpu_cores

    @property
    def memory(self) -> int:
        return self.DEFAULT_MEMORY_MB if self.memory_mb is None else self.memory_mb

    @property
    def copy_count(self) -> int:
        return self.DEFAULT_COPIES if self.copies is None else self.copies

    @property
    def copy_bounds(self) -> tuple[int, int]:
        low = self.copy_count if self.min_copies is None else self.min_copies
        high = max(self.DEFAULT_MAX_COPIES, self.copy_count)
        return low, high if self.max_copies is None else self.max_copies

    @property
    def target_invocations(self) -> float:
        if self.target_invocations_per_copy is None:
            return self.DEFAULT_TARGET_INVOCATIONS
        return self.target_invocations_per_copy

    @property
    def scales_to_zero(self) -> bool:
        return self.min_instances == 0


def component_name(endpoint_name: str, archive_key: str) -> str:
    """The InferenceComponentName of one archive key: ``<endpoint>-<key without .tar.gz>``.

    Characters other than letters and digits become ``-`` (``brand/safety.tar.gz`` gives
    ``scorer-brand-safety``); at most 63 characters, SageMaker's limit.
    """
    stem = archive_key
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", f"{endpoint_name}-{stem}").strip("-")
    return cleaned[:63].rstrip("-")


def check_component_archives(endpoint_name: str, archives: tuple[str, ...]) -> None:
    """Raise ValueError for an archive key that is not a .tar.gz or names clash."""
    if not archives:
        raise ValueError(
            "mode inference-components needs inference_components: the archive keys under "
            "model_data_prefix, one component each, e.g. "
            "-c inference_components=creative-v3.tar.gz,brand-safety.tar.gz"
        )
    names: dict[str, str] = {}
    for key in archives:
        if key.startswith(("/", "s3://")) or not key.endswith(ARCHIVE_SUFFIXES):
            raise ValueError(
                f"inference_components: {key!r} is not an archive key under model_data_prefix "
                "(a relative key ending .tar.gz, e.g. creative-v3.tar.gz)"
            )
        name = component_name(endpoint_name, key)
        if not SAGEMAKER_NAME.match(name):
            raise ValueError(f"inference_components: {key!r} gives no valid component name")
        if name in names:
            raise ValueError(
                f"inference_components: {names[name]!r} and {key!r} both give the component "
                f"name {name!r}; rename one archive"
            )
        names[name] = key


#: CaptureOption.CaptureMode; InputAndOutput is written as the two options Input and Output
CAPTURE_MODES = ("Input", "Output", "InputAndOutput")
#: CaptureContentTypeHeader: 1-10 content types of each kind, each at most 256 characters
MAX_CAPTURE_CONTENT_TYPES = 10


@dataclass(frozen=True)
class DataCaptureSettings:
    """``DataCaptureConfig``: what the endpoint records for model monitoring, and where."""

    #: InitialSamplingPercentage; capture is on when it is given
    percent: int | None = None
    #: DestinationS3Uri (s3://bucket/prefix/); None: a bucket the stack creates
    destination: str | None = None
    mode: str | None = None
    #: CaptureContentTypeHeader: bodies of these types are recorded as JSON / CSV text,
    #: every other body base64-encoded
    json_content_types: tuple[str, ...] | None = None
    csv_content_types: tuple[str, ...] | None = None
    kms_key_arn: str | None = None

    DEFAULT_MODE = "InputAndOutput"
    DEFAULT_JSON_CONTENT_TYPES = ("application/json",)

    @property
    def enabled(self) -> bool:
        return self.percent is not None

    def is_set(self) -> bool:
        """Whether any data capture key was given."""
        return _given(self)

    @property
    def capture_modes(self) -> tuple[str, ...]:
        mode = self.mode or self.DEFAULT_MODE
        return ("Input", "Output") if mode == "InputAndOutput" else (mode,)

    @property
    def json_types(self) -> tuple[str, ...]:
        if self.json_content_types is None:
            return () if self.csv_content_types else self.DEFAULT_JSON_CONTENT_TYPES
        return self.json_content_types

    @property
    def csv_types(self) -> tuple[str, ...]:
        return self.csv_content_types or ()

    def check(self) -> None:
        """Raise ValueError for a value DataCaptureConfig refuses."""
        if not self.enabled:
            if self.is_set():
                raise ValueError(
                    "the data_capture_* settings need data_capture_percent (the sampling "
                    "percentage, 0-100), which turns data capture on"
                )
            return
        assert self.percent is not None
        check_range("data_capture_percent", self.percent, 0, 100)
        if self.mode is not None and self.mode not in CAPTURE_MODES:
            raise ValueError(
                f"data_capture_mode must be one of {', '.join(CAPTURE_MODES)}, got {self.mode!r}"
            )
        for key, types in (
            ("data_capture_json_content_types", self.json_types),
            ("data_capture_csv_content_types", self.csv_types),
        ):
            if len(types) > MAX_CAPTURE_CONTENT_TYPES:
                raise ValueError(f"{key}: at most {MAX_CAPTURE_CONTENT_TYPES} content types")
            for content_type in types:
                if "/" not in content_type or len(content_type) > 256:
                    raise ValueError(f"{key}: {content_type!r} is not a content type")
        if self.kms_key_arn is not None and not self.kms_key_arn.startswith("arn:"):
            raise ValueError("data_capture_kms_key_arn must be a KMS key ARN")


#: AsyncInferenceClientConfig.MaxConcurrentInvocationsPerInstance: 1-1000
MAX_ASYNC_CONCURRENCY = 1000
_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


@dataclass(frozen=True)
class AsyncSettings:
    """``AsyncInferenceConfig`` and the backlog autoscaling of an async endpoint."""

    #: S3OutputPath (required in mode async)
    output_path: str | None = None
    #: S3FailurePath
    failure_path: str | None = None
    #: where callers put the inputs (InputLocation); None: ``async-input/`` in the
    #: output bucket. The role may read only there.
    input_path: str | None = None
    success_topic_arn: str | None = None
    error_topic_arn: str | None = None
    #: NotificationConfig.IncludeInferenceResponseIn for the topics given (<= 128 KB answers)
    include_response: bool | None = None
    max_concurrent_invocations: int | None = None
    #: ApproximateBacklogSizePerInstance target
    target_backlog_per_instance: float | None = None

    DEFAULT_INPUT_KEY_PREFIX = "async-input/"
    DEFAULT_TARGET_BACKLOG = 5.0

    def is_set(self) -> bool:
        """Whether any async key was given."""
        return _given(self)

    @property
    def target_backlog(self) -> float:
        if self.target_backlog_per_instance is None:
            return self.DEFAULT_TARGET_BACKLOG
        return self.target_backlog_per_instance

    def check(self) -> None:
        """Raise ValueError for a value AsyncInferenceConfig refuses (mode async)."""
        if self.output_path is None:
            raise ValueError(
                "mode async needs async_output_path, the S3 prefix SageMaker writes the "
                "answers to, e.g. -c async_output_path=s3://my-bucket/scorer-async/output/"
            )
        for key, arn in (
            ("async_success_topic_arn", self.success_topic_arn),
            ("async_error_topic_arn", self.error_topic_arn),
        ):
            if arn is not None and not _SNS_TOPIC_ARN.match(arn):
                raise ValueError(f"{key} {arn!r} is not an SNS topic ARN")
        if self.include_response and not (self.success_topic_arn or self.error_topic_arn):
            raise ValueError(
                "async_include_response puts answers into the SNS notifications; give "
                "async_success_topic_arn or async_error_topic_arn"
            )
        concurrency = self.max_concurrent_invocations
        if concurrency is not None:
            check_range("async_max_concurrent_invocations", concurrency, 1, MAX_ASYNC_CONCURRENCY)
        if self.target_backlog <= 0:
            raise ValueError("async_target_backlog_per_instance must be positive")


@dataclass(frozen=True)
class TransformSettings:
    """What the execution role may read and write for ``CreateTransformJob`` on the model."""

    input_path: str | None = None
    output_path: str | None = None

    def is_set(self) -> bool:
        return _given(self)

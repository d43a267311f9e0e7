"""CloudWatch alarms on the endpoint variant, some of which roll a deployment back.

Metrics (SageMaker developer guide, "Amazon SageMaker metrics in Amazon CloudWatch" and
"CloudWatch Metrics for Multi-Model Endpoint Deployments"):

* ``AWS/SageMaker``: ``Invocation5XXErrors`` (count), ``ModelLatency`` (microseconds);
  multi-model endpoints only: ``ModelLoadingWaitTime`` (microseconds) and ``ModelCacheHit``
  (its Average is the ratio of requests whose model was already loaded).
* ``/aws/sagemaker/Endpoints``: ``GPUMemoryUtilization`` (percent per GPU, summed over the
  instance's GPUs).

All use the dimensions ``EndpointName`` and ``VariantName``. Missing data (no traffic, or a
metric the mode never emits) does not breach.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from scorer_infra.instance_types import Hardware
from scorer_infra.settings import EndpointSettings, Mode

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
MICROSECONDS_PER_MS = 1000
PERIOD = Duration.minutes(1)
CACHE_HIT_PERIOD = Duration.minutes(5)
ERRORS_5XX = "invocation-5xx"
MODEL_LATENCY = "model-latency"


@dataclass(frozen=True)
class EndpointAlarms:
    """The alarms made for one endpoint; ``rollback`` are the ones deployments watch."""

    all: tuple[cloudwatch.Alarm, ...]
    rollback: tuple[cloudwatch.Alarm, ...]
    rollback_names: tuple[str, ...]


def alarm_name(endpoint_name: str, what: str) -> str:
    """The name of one of the endpoint's alarms, e.g. ``scorer-invocation-5xx``."""
    return f"{endpoint_name}-{what}"


def endpoint_alarms(scope: Construct, settings: EndpointSettings) -> EndpointAlarms:
    """Create the endpoint's alarms under ``scope``; names are ``<endpoint>-<what>``."""
    name = settings.endpoint_name
    thresholds = settings.alarms
    dimensions = {"EndpointName": name, "VariantName": settings.variant_name}

    def alarm(
        construct_id: str,
        *,
        what: str,
        namespace: str,
        metric_name: str,
        statistic: str,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        description: str,
        period: Duration = PERIOD,
    ) -> cloudwatch.Alarm:
        metric = cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map=dimensions,
            statistic=statistic,
            period=period,
        )
        return cloudwatch.Alarm(
            scope,
            construct_id,
            alarm_name=alarm_name(name, what),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=thresholds.evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    above = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    errors = alarm(
        "Invocation5xxAlarm",
        what=ERRORS_5XX,
        namespace=SAGEMAKER_NAMESPACE,
        metric_name="Invocation5XXErrors",
        statistic="Sum",
        threshold=thresholds.errors_5xx_per_minute,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        description=f"{name}: the container answers 5xx (rolls a deployment back)",
    )
    latency = alarm(
        "ModelLatencyAlarm",
        what=MODEL_LATENCY,
        namespace=SAGEMAKER_NAMESPACE,
        metric_name="ModelLatency",
        statistic="Average",
        threshold=thresholds.model_latency_ms * MICROSECONDS_PER_MS,
        comparison=above,
        description=f"{name}: average model latency above {thresholds.model_latency_ms:g} ms "
        "(rolls a deployment back)",
    )
    created = [errors, latency]

    if settings.mode is Mode.CPU_MULTI_MODEL:
        created.append(
            alarm(
                "ModelLoadingWaitAlarm",
                what="model-loading-wait",
                namespace=SAGEMAKER_NAMESPACE,
                metric_name="ModelLoadingWaitTime",
                statistic="Average",
                threshold=thresholds.model_loading_wait_ms * MICROSECONDS_PER_MS,
                comparison=above,
                description=f"{name}: requests wait more than "
                f"{thresholds.model_loading_wait_ms:g} ms for their model to load",
            )
        )
        created.append(
            alarm(
                "ModelCacheHitAlarm",
                what="model-cache-hit",
                namespace=SAGEMAKER_NAMESPACE,
                metric_name="ModelCacheHit",
                statistic="Average",
                threshold=thresholds.cache_hit_rate_min,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                period=CACHE_HIT_PERIOD,
                description=f"{name}: under {thresholds.cache_hit_rate_min:.0%} of requests find "
                "their model loaded (instances too small or too few for the working set)",
            )
        )
    if settings.instance.hardware is Hardware.GPU:
        created.append(
            alarm(
                "GpuMemoryAlarm",
                what="gpu-memory",
                namespace=INSTANCE_NAMESPACE,
                metric_name="GPUMemoryUtilization",
                statistic="Maximum",
                threshold=thresholds.gpu_memory_percent,
                comparison=above,
                description=f"{name}: GPU memory above {thresholds.gpu_memory_percent:g}% "
                "on an instance",
            )
        )

    if thresholds.topic_arn is not None:
        topic = sns.Topic.from_topic_arn(scope, "AlarmTopic", thresholds.topic_arn)
        for each in created:
            each.add_alarm_action(actions.SnsAction(topic))
            each.add_ok_action(actions.SnsAction(topic))
    return EndpointAlarms(
        all=tuple(created),
        rollback=(errors, latency),
        rollback_names=(alarm_name(name, ERRORS_5XX), alarm_name(name, MODEL_LATENCY)),
    )

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

Per model, for the models the context names (``alarm_models``, ``alarm_target_models``),
two alarms on the container's own EMF metrics (:mod:`scorer_infra.emf_metrics`), in the
namespace the stack gives the container: the 5xx rate, metric math on ``Requests`` by
``code`` over ``Requests`` by ``model``, and the p99 of ``RequestDuration``. Their period
is the container's EMF interval, rounded up to whole minutes. They never roll a
deployment back: a model that is not loaded yet has no data.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from scorer_infra import emf_metrics
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
    #: the per-model alarms on the container's EMF metrics (also in ``all``)
    models: tuple[cloudwatch.Alarm, ...] = ()


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
    instance = settings.instance
    if instance is not None and instance.hardware is Hardware.GPU:
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

    models = model_alarms(scope, settings)
    created.extend(models)

    if thresholds.topic_arn is not None:
        topic = sns.Topic.from_topic_arn(scope, "AlarmTopic", thresholds.topic_arn)
        for each in created:
            each.add_alarm_action(actions.SnsAction(topic))
            each.add_ok_action(actions.SnsAction(topic))
    return EndpointAlarms(
        all=tuple(created),
        rollback=(errors, latency),
        rollback_names=(alarm_name(name, ERRORS_5XX), alarm_name(name, MODEL_LATENCY)),
        models=models,
    )


def model_alarm_name(endpoint_name: str, model: str, what: str) -> str:
    """The name of one per-model alarm, e.g. ``scorer-model-creative-v3-p99-latency``."""
    return f"{endpoint_name}-model-{model}-{what}"


def model_alarms(scope: Construct, settings: EndpointSettings) -> tuple[cloudwatch.Alarm, ...]:
    """The 5xx-rate and p99-latency alarms of each model the settings name (none if none)."""
    models = settings.alarm_model_dimensions
    if not models:
        return ()
    thresholds = settings.alarms
    interval = emf_metrics.emf_interval_seconds(settings.environment)
    period = Duration.seconds(emf_metrics.alarm_period_seconds(interval))
    namespace = settings.metrics_namespace
    name = settings.endpoint_name

    def metric(metric_name: str, statistic: str, **dimensions: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map=dimensions,
            statistic=statistic,
            period=period,
        )

    created: list[cloudwatch.Alarm] = []
    for model in models:
        by_model = {emf_metrics.MODEL_DIMENSION: model}
        errors = {
            f"c{code}": metric(
                emf_metrics.REQUESTS, "Sum", **by_model, **{emf_metrics.CODE_DIMENSION: code}
            )
            for code in emf_metrics.ERROR_CODES
        }
        # SUM([...]) adds the codes that have data; no 5xx at all leaves no data (not
        # breaching), and neither does a period without requests
        rate = cloudwatch.MathExpression(
            expression=f"100 * SUM([{', '.join(errors)}]) / total",
            using_metrics={"total": metric(emf_metrics.REQUESTS, "Sum", **by_model), **errors},
            label=f"{model} 5xx %",
            period=period,
        )
        p99 = metric(emf_metrics.REQUEST_DURATION, "p99", **by_model)
        for construct_id, what, watched, threshold, description in (
            (
                f"Model-{model}-5xxRateAlarm",  # one id per model: a stable logical id
                "5xx-rate",
                rate,
                thresholds.model_5xx_percent,
                f"{name}: model {model} answers more than {thresholds.model_5xx_percent:g}% "
                "of its requests with 5xx (container EMF metrics)",
            ),
            (
                f"Model-{model}-P99LatencyAlarm",
                "p99-latency",
                p99,
                thresholds.model_p99_ms,
                f"{name}: model {model}'s p99 time in the worker is above "
                f"{thresholds.model_p99_ms:g} ms (container EMF metrics; a bucket bound)",
            ),
        ):
            created.append(
                cloudwatch.Alarm(
                    scope,
                    construct_id,
                    alarm_name=model_alarm_name(name, model, what),
                    alarm_description=description,
                    metric=watched,
                    threshold=threshold,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    evaluation_periods=thresholds.evaluation_periods,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
    return tuple(created)

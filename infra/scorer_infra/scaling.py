"""Application Auto Scaling of the endpoint variant's instance count.

Target tracking on the predefined ``SageMakerVariantInvocationsPerInstance`` metric (the
average invocations per instance per minute), which the SageMaker developer guide
recommends for multi-model endpoints too. No role is given, so Application Auto Scaling
uses its service-linked role for SageMaker endpoints.
"""

from __future__ import annotations

from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from scorer_infra.settings import EndpointSettings

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PREDEFINED_METRIC = "SageMakerVariantInvocationsPerInstance"


def variant_resource_id(endpoint_name: str, variant_name: str) -> str:
    """The Application Auto Scaling resource id of an endpoint variant."""
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def _variant_target(
    scope: Construct, settings: EndpointSettings, *, dimension: str, low: int, high: int
) -> appscaling.CfnScalableTarget:
    """The endpoint variant as a scalable target of one of its dimensions."""
    return appscaling.CfnScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace="sagemaker",
        scalable_dimension=dimension,
        resource_id=variant_resource_id(settings.endpoint_name, settings.variant_name),
        min_capacity=low,
        max_capacity=high,
    )


def variant_scaling(
    scope: Construct, settings: EndpointSettings
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """Register the variant as a scalable target and attach a target-tracking policy."""
    scaling = settings.scaling
    target = _variant_target(
        scope,
        settings,
        dimension=SCALABLE_DIMENSION,
        low=scaling.min_instances,
        high=scaling.max_instances,
    )
    policy = _target_tracking(
        scope,
        "ScalingPolicy",
        name=f"{settings.endpoint_name}-invocations-per-instance",
        target=target,
        metric=PREDEFINED_METRIC,
        value=scaling.target_invocations_per_instance,
        settings=settings,
    )
    return target, policy


PROVISIONED_CONCURRENCY_DIMENSION = "sagemaker:variant:DesiredProvisionedConcurrency"
PROVISIONED_CONCURRENCY_METRIC = "SageMakerVariantProvisionedConcurrencyUtilization"
COPY_COUNT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
INVOCATIONS_PER_COPY_METRIC = "SageMakerInferenceComponentInvocationsPerCopy"
#: what a component at zero copies reports when a request finds no copy (AWS/SageMaker,
#: dimension InferenceComponentName); its alarm drives the step policy that wakes it
NO_CAPACITY_METRIC = "NoCapacityInvocationFailures"


def _target_tracking(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    target: appscaling.CfnScalableTarget,
    metric: str | appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty,
    value: float,
    settings: EndpointSettings,
) -> appscaling.CfnScalingPolicy:
    """Target tracking on a predefined metric (its name) or a customized one."""
    scaling = settings.scaling
    predefined = (
        appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
            predefined_metric_type=metric
        )
        if isinstance(metric, str)
        else None
    )
    return appscaling.CfnScalingPolicy(
        scope,
        construct_id,
        policy_name=name,
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.ref,
        target_tracking_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=value,
                predefined_metric_specification=predefined,
                customized_metric_specification=None if isinstance(metric, str) else metric,
                scale_in_cooldown=scaling.scale_in_cooldown_seconds,
                scale_out_cooldown=scaling.scale_out_cooldown_seconds,
            )
        ),
    )


def _wake_from_zero(
    scope: Construct,
    construct_id: str,
    *,
    target: appscaling.CfnScalableTarget,
    settings: EndpointSettings,
    policy_name: str,
    alarm_name: str,
    alarm_description: str,
    metric: str,
    dimension: tuple[str, str],
    statistic: str,
) -> list[Construct]:
    """A step policy that adds one to a target at zero, and the alarm that fires it.

    Target tracking cannot scale out from zero, so an alarm on ``metric`` (AWS/SageMaker,
    one ``dimension`` name and value, reaching 1 within a minute) runs the step policy.
    """
    wake = appscaling.CfnScalingPolicy(
        scope,
        f"{construct_id}WakePolicy",
        policy_name=policy_name,
        policy_type="StepScaling",
        scaling_target_id=target.ref,
        step_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                adjustment_type="ChangeInCapacity",
                metric_aggregation_type=statistic,
                cooldown=settings.scaling.scale_out_cooldown_seconds,
                step_adjustments=[
                    appscaling.CfnScalingPolicy.StepAdjustmentProperty(
                        metric_interval_lower_bound=0, scaling_adjustment=1
                    )
                ],
            )
        ),
    )
    dimension_name, dimension_value = dimension
    alarm = cloudwatch.CfnAlarm(
        scope,
        f"{construct_id}WakeAlarm",
        alarm_name=alarm_name,
        alarm_description=alarm_description,
        namespace="AWS/SageMaker",
        metric_name=metric,
        dimensions=[
            cloudwatch.CfnAlarm.DimensionProperty(name=dimension_name, value=dimension_value)
        ],
        statistic=statistic,
        period=60,
        evaluation_periods=1,
        threshold=1,
        comparison_operator="GreaterThanOrEqualToThreshold",
        treat_missing_data="notBreaching",
        alarm_actions=[wake.ref],
    )
    return [wake, alarm]


def provisioned_concurrency_scaling(
    scope: Construct, settings: EndpointSettings
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """Serverless: scale provisioned concurrency on its utilization (a ratio)."""
    serverless = settings.serverless
    low, high = serverless.provisioned_bounds
    target = _variant_target(
        scope, settings, dimension=PROVISIONED_CONCURRENCY_DIMENSION, low=low, high=high
    )
    policy = _target_tracking(
        scope,
        "ScalingPolicy",
        name=f"{settings.endpoint_name}-provisioned-concurrency-utilization",
        target=target,
        metric=PROVISIONED_CONCURRENCY_METRIC,
        value=serverless.utilization,
        settings=settings,
    )
    return target, policy


def component_resource_id(component_name: str) -> str:
    """The Application Auto Scaling resource id of an inference component."""
    return f"inference-component/{component_name}"


def component_scaling(
    scope: Construct, construct_id: str, settings: EndpointSettings, component_name: str
) -> tuple[appscaling.CfnScalableTarget, list[Construct]]:
    """Scale one component's copies on invocations per copy; wake it from zero by a step.

    With ``ic_min_instances=0`` the component may scale to zero copies (MinCapacity 0), and
    target tracking cannot scale out from zero, so a step policy adds one copy when its
    ``NoCapacityInvocationFailures`` alarm fires (SageMaker developer guide, "Scale an
    endpoint to zero instances").
    """
    ic = settings.inference_components
    low, high = ic.copy_bounds
    target = appscaling.CfnScalableTarget(
        scope,
        f"{construct_id}ScalableTarget",
        service_namespace="sagemaker",
        scalable_dimension=COPY_COUNT_DIMENSION,
        resource_id=component_resource_id(component_name),
        min_capacity=0 if ic.scales_to_zero else low,
        max_capacity=high,
    )
    created: list[Construct] = [
        _target_tracking(
            scope,
            f"{construct_id}ScalingPolicy",
            name=f"{component_name}-invocations-per-copy",
            target=target,
            metric=INVOCATIONS_PER_COPY_METRIC,
            value=ic.target_invocations,
            settings=settings,
        )
    ]
    if ic.scales_to_zero:
        created += _wake_from_zero(
            scope,
            construct_id,
            target=target,
            settings=settings,
            policy_name=f"{component_name}-wake-from-zero",
            alarm_name=f"{component_name}-no-capacity",
            alarm_description=f"{component_name} has no copy for a request: add one",
            metric=NO_CAPACITY_METRIC,
            dimension=("InferenceComponentName", component_name),
            statistic="Maximum",
        )
    return target, created


BACKLOG_PER_INSTANCE_METRIC = "ApproximateBacklogSizePerInstance"
#: 1 while requests are queued and the endpoint has no instance (AWS/SageMaker, EndpointName)
BACKLOG_WITHOUT_CAPACITY_METRIC = "HasBacklogWithoutCapacity"


def async_scaling(scope: Construct, settings: EndpointSettings) -> appscaling.CfnScalableTarget:
    """Scale an async endpoint on its queue, down to ``min_instances`` (default 0).

    The SageMaker developer guide's recipe ("Autoscale an asynchronous endpoint"): target
    tracking on ``ApproximateBacklogSizePerInstance`` (AWS/SageMaker, Average, dimension
    EndpointName) and, at zero instances, where there is no per-instance backlog to track,
    a step policy that adds an instance when ``HasBacklogWithoutCapacity`` reaches 1.
    """
    scaling = settings.scaling
    name = settings.endpoint_name
    target = _variant_target(
        scope,
        settings,
        dimension=SCALABLE_DIMENSION,
        low=scaling.min_instances,
        high=scaling.max_instances,
    )
    _target_tracking(
        scope,
        "ScalingPolicy",
        name=f"{name}-backlog-per-instance",
        target=target,
        metric=appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
            namespace="AWS/SageMaker",
            metric_name=BACKLOG_PER_INSTANCE_METRIC,
            dimensions=[
                appscaling.CfnScalingPolicy.MetricDimensionProperty(name="EndpointName", value=name)
            ],
            statistic="Average",
        ),
        value=settings.asynchronous.target_backlog,
        settings=settings,
    )
    if scaling.min_instances == 0:
        _wake_from_zero(
            scope,
            "",
            target=target,
            settings=settings,
            policy_name=f"{name}-wake-on-backlog",
            alarm_name=f"{name}-backlog-without-capacity",
            alarm_description=f"{name}: requests are queued and no instance runs: add one",
            metric=BACKLOG_WITHOUT_CAPACITY_METRIC,
            dimension=("EndpointName", name),
            statistic="Average",
        )
    return target

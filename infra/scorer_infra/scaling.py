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


def variant_scaling(
    scope: Construct, settings: EndpointSettings
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """Register the variant as a scalable target and attach a target-tracking policy."""
    scaling = settings.scaling
    target = appscaling.CfnScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace="sagemaker",
        scalable_dimension=SCALABLE_DIMENSION,
        resource_id=variant_resource_id(settings.endpoint_name, settings.variant_name),
        min_capacity=scaling.min_instances,
        max_capacity=scaling.max_instances,
    )
    policy = appscaling.CfnScalingPolicy(
        scope,
        "ScalingPolicy",
        policy_name=f"{settings.endpoint_name}-invocations-per-instance",
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.ref,
        target_tracking_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=scaling.target_invocations_per_instance,
                predefined_metric_specification=(
                    appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                        predefined_metric_type=PREDEFINED_METRIC
                    )
                ),
                scale_in_cooldown=scaling.scale_in_cooldown_seconds,
                scale_out_cooldown=scaling.scale_out_cooldown_seconds,
            )
        ),
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
    metric: str,
    value: float,
    settings: EndpointSettings,
) -> appscaling.CfnScalingPolicy:
    scaling = settings.scaling
    return appscaling.CfnScalingPolicy(
        scope,
        construct_id,
        policy_name=name,
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.ref,
        target_tracking_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=value,
                predefined_metric_specification=(
                    appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                        predefined_metric_type=metric
                    )
                ),
                scale_in_cooldown=scaling.scale_in_cooldown_seconds,
                scale_out_cooldown=scaling.scale_out_cooldown_seconds,
            )
        ),
    )


def provisioned_concurrency_scaling(
    scope: Construct, settings: EndpointSettings
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """Serverless: scale provisioned concurrency on its utilization (a ratio)."""
    serverless = settings.serverless
    low, high = serverless.provisioned_bounds
    target = appscaling.CfnScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace="sagemaker",
        scalable_dimension=PROVISIONED_CONCURRENCY_DIMENSION,
        resource_id=variant_resource_id(settings.endpoint_name, settings.variant_name),
        min_capacity=low,
        max_capacity=high,
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
        wake = appscaling.CfnScalingPolicy(
            scope,
            f"{construct_id}WakePolicy",
            policy_name=f"{component_name}-wake-from-zero",
            policy_type="StepScaling",
            scaling_target_id=target.ref,
            step_scaling_policy_configuration=(
                appscaling.CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                    adjustment_type="ChangeInCapacity",
                    metric_aggregation_type="Maximum",
                    cooldown=settings.scaling.scale_out_cooldown_seconds,
                    step_adjustments=[
                        appscaling.CfnScalingPolicy.StepAdjustmentProperty(
                            metric_interval_lower_bound=0, scaling_adjustment=1
                        )
                    ],
                )
            ),
        )
        alarm = cloudwatch.CfnAlarm(
            scope,
            f"{construct_id}WakeAlarm",
            alarm_name=f"{component_name}-no-capacity",
            alarm_description=f"{component_name} has no copy for a request: add one",
            namespace="AWS/SageMaker",
            metric_name=NO_CAPACITY_METRIC,
            dimensions=[
                cloudwatch.CfnAlarm.DimensionProperty(
                    name="InferenceComponentName", value=component_name
                )
            ],
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[wake.ref],
        )
        created += [wake, alarm]
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
    target = appscaling.CfnScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace="sagemaker",
        scalable_dimension=SCALABLE_DIMENSION,
        resource_id=variant_resource_id(name, settings.variant_name),
        min_capacity=scaling.min_instances,
        max_capacity=scaling.max_instances,
    )
    appscaling.CfnScalingPolicy(
        scope,
        "ScalingPolicy",
        policy_name=f"{name}-backlog-per-instance",
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.ref,
        target_tracking_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=settings.asynchronous.target_backlog,
                customized_metric_specification=(
                    appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                        namespace="AWS/SageMaker",
                        metric_name=BACKLOG_PER_INSTANCE_METRIC,
                        dimensions=[
                            appscaling.CfnScalingPolicy.MetricDimensionProperty(
                                name="EndpointName", value=name
                            )
                        ],
                        statistic="Average",
                    )
                ),
                scale_in_cooldown=scaling.scale_in_cooldown_seconds,
                scale_out_cooldown=scaling.scale_out_cooldown_seconds,
            )
        ),
    )
    if scaling.min_instances == 0:
        wake = appscaling.CfnScalingPolicy(
            scope,
            "WakePolicy",
            policy_name=f"{name}-wake-on-backlog",
            policy_type="StepScaling",
            scaling_target_id=target.ref,
            step_scaling_policy_configuration=(
                appscaling.CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                    adjustment_type="ChangeInCapacity",
                    metric_aggregation_type="Average",
                    cooldown=scaling.scale_out_cooldown_seconds,
                    step_adjustments=[
                        appscaling.CfnScalingPolicy.StepAdjustmentProperty(
                            metric_interval_lower_bound=0, scaling_adjustment=1
                        )
                    ],
                )
            ),
        )
        cloudwatch.CfnAlarm(
            scope,
            "WakeAlarm",
            alarm_name=f"{name}-backlog-without-capacity",
            alarm_description=f"{name}: requests are queued and no instance runs: add one",
            namespace="AWS/SageMaker",
            metric_name=BACKLOG_WITHOUT_CAPACITY_METRIC,
            dimensions=[cloudwatch.CfnAlarm.DimensionProperty(name="EndpointName", value=name)],
            statistic="Average",
            period=60,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[wake.ref],
        )
    return target

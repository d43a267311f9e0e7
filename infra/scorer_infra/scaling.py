"""Application Auto Scaling of the endpoint variant's instance count.

Target tracking on the predefined ``SageMakerVariantInvocationsPerInstance`` metric (the
average invocations per instance per minute), which the SageMaker developer guide
recommends for multi-model endpoints too. No role is given, so Application Auto Scaling
uses its service-linked role for SageMaker endpoints.
"""

from __future__ import annotations

from aws_cdk import aws_applicationautoscaling as appscaling
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

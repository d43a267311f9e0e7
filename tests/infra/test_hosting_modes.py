"""The hosting modes beyond real-time instances: serverless and inference components.

Each mode is synthesised offline from ``build_app`` with CLI-style context; the tests
assert the SageMaker and Application Auto Scaling resources by value, the refusals at synth
(and their messages), and that cfn-lint finds nothing in any template.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from scorer_infra import ScorerEndpointStack, settings_from_context
from scorer_infra.hosting import component_name

ACCOUNT = "123456789012"  # the documentation account id; nothing is deployed
IMAGE = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/scorer:3f2c1ab"
PREFIX = "s3://creative-models/scorer/prod/"
STACK = "ScorerEndpoint"


class Synth:
    """One synthesised app: its stack and the template as JSON."""

    def __init__(self, build_app: Any, context: dict[str, Any], outdir: Path) -> None:
        app = cdk.App(context={"image_uri": IMAGE, **context}, outdir=str(outdir))
        build_app(app)
        self.stack: ScorerEndpointStack = app.node.find_child(STACK)  # type: ignore[assignment]
        self.template: dict[str, Any] = Template.from_stack(self.stack).to_json()

    def resources(self, type_name: str) -> dict[str, dict[str, Any]]:
        """Logical id -> properties, for every resource of one type."""
        return {
            k: v.get("Properties", {})
            for k, v in self.template["Resources"].items()
            if v["Type"] == type_name
        }

    def one(self, type_name: str) -> dict[str, Any]:
        (found,) = self.resources(type_name).values()
        return found

    def variant(self) -> dict[str, Any]:
        (variant,) = self.one("AWS::SageMaker::EndpointConfig")["ProductionVariants"]
        return variant


def lint(synth: Synth) -> list[str]:
    """cfn-lint's errors and warnings for one template (W3005 is CDK's own, harmless)."""
    cfnlint_api = pytest.importorskip("cfnlint.api")
    matches = cfnlint_api.lint(json.dumps(synth.template), regions=["eu-west-1"])
    return [str(m) for m in matches if m.rule.id[0] in "EW" and m.rule.id != "W3005"]


@pytest.fixture(scope="module")
def build_app(cdk_app_module: ModuleType) -> Any:
    return cdk_app_module.build_app


@pytest.fixture(scope="module")
def synth(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Synthesise a context (memoised per module: jsii makes each synth cost time)."""
    done: dict[str, Synth] = {}

    def make(**context: Any) -> Synth:
        key = json.dumps(context, sort_keys=True)
        if key not in done:
            done[key] = Synth(build_app, context, tmp_path_factory.mktemp("synth"))
        return done[key]

    return make


def refused(**context: Any) -> str:
    with pytest.raises(ValueError) as raised:
        settings_from_context({"image_uri": IMAGE, **context}.get)
    return str(raised.value)


# --- serverless --------------------------------------------------------------------------

SERVERLESS = {
    "mode": "serverless",
    "model_data_prefix": PREFIX,
    "serverless_memory_mb": "3072",
    "serverless_max_concurrency": "20",
}


def test_serverless_variant_has_serverless_config_and_no_instances(synth: Any) -> None:
    s = synth(**SERVERLESS)
    variant = s.variant()
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 20}
    for absent in ("InstanceType", "InitialInstanceCount", "ManagedInstanceScaling"):
        assert absent not in variant
    container = s.one("AWS::SageMaker::Model")["PrimaryContainer"]
    # single-model: serverless hosts no multi-model endpoint; the container's cache loads
    assert container["Mode"] == "SingleModel"
    assert container["Environment"]["SCORER_MODEL_PREFIX"] == PREFIX
    # nothing to scale without provisioned concurrency, so no instance-count target
    assert s.resources("AWS::ApplicationAutoScaling::ScalableTarget") == {}
    assert s.one("AWS::SageMaker::Endpoint")["RetainAllVariantProperties"] is False
    alarms = {a["MetricName"] for a in s.resources("AWS::CloudWatch::Alarm").values()}
    assert alarms == {"Invocation5XXErrors", "ModelLatency"}


def test_serverless_defaults(synth: Any) -> None:
    s = synth(mode="serverless", model_data_prefix=PREFIX)
    assert s.variant()["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}


def test_serverless_provisioned_concurrency_scales_on_its_utilization(synth: Any) -> None:
    s = synth(
        **SERVERLESS,
        serverless_provisioned_concurrency="4",
        serverless_min_provisioned_concurrency="2",
        serverless_max_provisioned_concurrency="10",
        serverless_target_utilization="0.5",
    )
    assert s.variant()["ServerlessConfig"]["ProvisionedConcurrency"] == 4
    target = s.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredProvisionedConcurrency"
    assert target["ResourceId"] == "endpoint/scorer/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
    policy = s.one("AWS::ApplicationAutoScaling::ScalingPolicy")
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantProvisionedConcurrencyUtilization"
    }
    assert tracking["TargetValue"] == 0.5
    assert s.one("AWS::SageMaker::Endpoint")["RetainAllVariantProperties"] is True


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"instance_type": "ml.g5.xlarge"},
            "serverless endpoints have no GPUs.*Fix: -c mode=gpu-self-managed",
        ),
        ({"instance_type": "ml.c5.xlarge"}, "Fix: drop instance_type"),
        ({"serverless_memory_mb": "1500"}, "1024-6144 in steps of 1024"),
        ({"serverless_memory_mb": "8192"}, "one of 1024, 2048, 3072, 4096, 5120, 6144"),
        ({"serverless_max_concurrency": "201"}, r"serverless_max_concurrency must lie in \[1, 200"),
        (
            {"serverless_max_concurrency": "4", "serverless_provisioned_concurrency": "5"},
            "serverless_provisioned_concurrency must lie in",
        ),
        ({"serverless_target_utilization": "0.5"}, "give serverless_provisioned_concurrency"),
        ({"max_instances": "8"}, "do not apply to mode serverless"),
        ({"cache_gpu_memory_fraction": "0.5"}, "no GPU"),
    ],
)
def test_serverless_refusals(context: dict[str, Any], message: str) -> None:
    import re

    assert re.search(message, refused(mode="serverless", **context))


def test_serverless_settings_with_a_multi_model_endpoint_are_refused() -> None:
    message = refused(serverless_memory_mb="2048")
    assert "serverless endpoints do not host multi-model endpoints" in message
    assert "Fix: -c mode=serverless" in message
    assert "apply only with -c mode=serverless" in refused(
        mode="gpu-self-managed", serverless_max_concurrency="4"
    )


# --- inference components ----------------------------------------------------------------

COMPONENTS = {
    "mode": "inference-components",
    "model_data_prefix": PREFIX,
    "inference_components": "creative-v3.tar.gz,brand/safety.tar.gz",
    "ic_cpu_cores": "1.5",
    "ic_memory_mb": "6144",
    "ic_copies": "2",
    "ic_max_copies": "6",
    "ic_target_invocations_per_copy": "120",
    "ic_max_instances": "3",
}


def test_components_one_per_archive_with_compute_requirements(synth: Any) -> None:
    s = synth(**COMPONENTS)
    components = s.resources("AWS::SageMaker::InferenceComponent")
    assert len(components) == 2
    by_name = {c["InferenceComponentName"]: c for c in components.values()}
    assert set(by_name) == {"scorer-creative-v3", "scorer-brand-safety"}
    creative = by_name["scorer-creative-v3"]
    assert creative["EndpointName"] == "scorer"
    assert creative["VariantName"] == "AllTraffic"
    assert creative["RuntimeConfig"] == {"CopyCount": 2}
    spec = creative["Specification"]
    assert "ModelName" not in spec
    assert spec["Container"] == {
        "Image": IMAGE,
        "ArtifactUrl": f"{PREFIX}creative-v3.tar.gz",
        "Environment": {"SCORER_METRICS_NAMESPACE": "scorer"},
    }
    # ml.g5.xlarge (the default) has a GPU: one whole accelerator per copy
    assert spec["ComputeResourceRequirements"] == {
        "NumberOfCpuCoresRequired": 1.5,
        "MinMemoryRequiredInMb": 6144,
        "NumberOfAcceleratorDevicesRequired": 1,
    }
    safety = by_name["scorer-brand-safety"]["Specification"]["Container"]
    assert safety["ArtifactUrl"] == f"{PREFIX}brand/safety.tar.gz"
    for logical_id in components:
        assert "Endpoint" in s.template["Resources"][logical_id]["DependsOn"]


def test_components_endpoint_config_has_role_managed_scaling_and_no_model(synth: Any) -> None:
    s = synth(**COMPONENTS)
    assert s.resources("AWS::SageMaker::Model") == {}
    config = s.one("AWS::SageMaker::EndpointConfig")
    assert config["ExecutionRoleArn"] == {
        "Fn::GetAtt": [next(iter(s.resources("AWS::IAM::Role"))), "Arn"]
    }
    variant = s.variant()
    assert "ModelName" not in variant
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["ManagedInstanceScaling"] == {
        "Status": "ENABLED",
        "MinInstanceCount": 1,
        "MaxInstanceCount": 3,
    }
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    # components roll out on their own; the endpoint has no blue/green policy of its own
    assert "DeploymentConfig" not in s.one("AWS::SageMaker::Endpoint")


def test_components_scale_copies_on_invocations_per_copy(synth: Any) -> None:
    s = synth(**COMPONENTS)
    targets = s.resources("AWS::ApplicationAutoScaling::ScalableTarget")
    assert {t["ResourceId"] for t in targets.values()} == {
        "inference-component/scorer-creative-v3",
        "inference-component/scorer-brand-safety",
    }
    for target in targets.values():
        assert target["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
        assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    policies = s.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    assert [p["PolicyType"] for p in policies] == ["TargetTrackingScaling"] * 2
    for policy in policies:
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["TargetValue"] == 120
        assert tracking["PredefinedMetricSpecification"] == {
            "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
        }
    assert (
        s.resources("AWS::CloudWatch::Alarm")
        .keys()
        .isdisjoint({"Component0WakeAlarm", "Component1WakeAlarm"})
    )


def test_components_scale_to_zero_with_a_step_policy_that_wakes_them(synth: Any) -> None:
    s = synth(**COMPONENTS, ic_min_instances="0")
    assert s.variant()["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    targets = s.resources("AWS::ApplicationAutoScaling::ScalableTarget")
    assert {t["MinCapacity"] for t in targets.values()} == {0}
    policies = s.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    wake = policies["Component0WakePolicy"]
    assert wake["PolicyType"] == "StepScaling"
    assert wake["ScalingTargetId"] == {"Ref": "Component0ScalableTarget"}
    step = wake["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    alarm = s.resources("AWS::CloudWatch::Alarm")["Component0WakeAlarm"]
    assert alarm["MetricName"] == "NoCapacityInvocationFailures"
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [
        {"Name": "InferenceComponentName", "Value": "scorer-creative-v3"}
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "Component0WakePolicy"}]


def test_components_on_a_cpu_instance_ask_for_no_accelerator(synth: Any) -> None:
    s = synth(**COMPONENTS, instance_type="ml.c5.4xlarge")
    for component in s.resources("AWS::SageMaker::InferenceComponent").values():
        requirements = component["Specification"]["ComputeResourceRequirements"]
        assert "NumberOfAcceleratorDevicesRequired" not in requirements
    assert s.variant()["InstanceType"] == "ml.c5.4xlarge"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"inference_components": None}, "needs inference_components"),
        ({"inference_components": "creative-v3"}, "is not an archive key"),
        ({"inference_components": "a/x.tar.gz,a-x.tar.gz"}, "both give the component name"),
        ({"ic_accelerators": "0"}, "at least 1 on the GPU instance ml.g5.xlarge"),
        ({"ic_accelerators": "1", "instance_type": "ml.c5.xlarge"}, "applies to GPU instances"),
        ({"ic_cpu_cores": "0.1"}, "at least 0.25"),
        ({"ic_memory_mb": "64"}, "at least 128"),
        ({"ic_copies": "8"}, "need ic_min_copies <= ic_copies <= ic_max_copies"),
        ({"ic_min_instances": "0", "autoscaling": "false"}, "needs autoscaling"),
        ({"cache_max_models": "4"}, "each inference component serves one model"),
    ],
)
def test_components_refusals(context: dict[str, Any], message: str) -> None:
    merged = {**COMPONENTS, **context}
    assert message in refused(**{k: v for k, v in merged.items() if v is not None})


def test_component_settings_with_another_mode_are_refused() -> None:
    assert "apply only with -c mode=inference-components" in refused(
        inference_components="creative-v3.tar.gz"
    )


def test_component_names_fit_sagemaker() -> None:
    assert component_name("scorer", "market/fr.tgz") == "scorer-market-fr"
    assert len(component_name("e" * 60, "creative-v3.tar.gz")) == 63


# --- data capture ------------------------------------------------------------------------

CAPTURE = {
    "data_capture_percent": "20",
    "data_capture_s3_uri": "s3://creative-capture/scorer",
    "data_capture_json_content_types": "application/json,application/jsonlines",
    "data_capture_csv_content_types": "text/csv",
}


def execution_statements(s: Synth) -> dict[str, dict[str, Any]]:
    (role,) = s.resources("AWS::IAM::Role").values()
    (policy,) = role["Policies"]
    return {st["Sid"]: st for st in policy["PolicyDocument"]["Statement"]}


def test_data_capture_on_a_real_time_endpoint(synth: Any) -> None:
    s = synth(mode="gpu-self-managed", model_data_prefix=PREFIX, **CAPTURE)
    capture = s.one("AWS::SageMaker::EndpointConfig")["DataCaptureConfig"]
    assert capture == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": "s3://creative-capture/scorer/",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "JsonContentTypes": ["application/json", "application/jsonlines"],
            "CsvContentTypes": ["text/csv"],
        },
    }
    write = execution_statements(s)["WriteDataCapture"]
    assert write["Action"] == "s3:PutObject"
    assert write["Resource"] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::creative-capture/scorer/*"]]
    }
    assert s.template["Outputs"]["DataCaptureUri"]["Value"] == "s3://creative-capture/scorer/"


def test_data_capture_changes_the_endpoint_config_name(synth: Any) -> None:
    without = synth(mode="gpu-self-managed", model_data_prefix=PREFIX)
    with_capture = synth(mode="gpu-self-managed", model_data_prefix=PREFIX, **CAPTURE)
    name = "EndpointConfigName"
    assert (
        without.one("AWS::SageMaker::EndpointConfig")[name]
        != with_capture.one("AWS::SageMaker::EndpointConfig")[name]
    )
    assert "DataCaptureConfig" not in without.one("AWS::SageMaker::EndpointConfig")
    assert "WriteDataCapture" not in execution_statements(without)


def test_data_capture_defaults_to_a_new_bucket_input_only_json(synth: Any) -> None:
    s = synth(data_capture_percent="100", data_capture_mode="Input")
    capture = s.one("AWS::SageMaker::EndpointConfig")["DataCaptureConfig"]
    bucket_id = next(k for k in s.resources("AWS::S3::Bucket") if k.startswith("DataCapture"))
    assert capture["DestinationS3Uri"] == {
        "Fn::Join": ["", ["s3://", {"Ref": bucket_id}, "/data-capture/"]]
    }
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}]
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"]}
    assert s.template["Resources"][bucket_id]["DeletionPolicy"] == "Retain"


def test_data_capture_on_a_multi_model_endpoint_warns_about_model_monitor(synth: Any) -> None:
    from aws_cdk.assertions import Annotations, Match

    s = synth(model_data_prefix=PREFIX, **CAPTURE)
    assert (
        s.one("AWS::SageMaker::EndpointConfig")["DataCaptureConfig"]["InitialSamplingPercentage"]
        == 20
    )
    Annotations.from_stack(s.stack).has_warning(
        "*", Match.string_like_regexp("Model Monitor does not monitor multi-model endpoints")
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"mode": "serverless"}, "data capture is not supported on serverless endpoints"),
        ({"data_capture_percent": "101"}, "data_capture_percent must lie in [0, 100]"),
        ({"data_capture_mode": "Both"}, "data_capture_mode must be one of"),
        (
            {"data_capture_s3_uri": "capture/bucket"},
            "data_capture_s3_uri 'capture/bucket' is not an S3 URL",
        ),
        ({"data_capture_csv_content_types": "csv"}, "'csv' is not a content type"),
    ],
)
def test_data_capture_refusals(context: dict[str, Any], message: str) -> None:
    assert message in refused(**{**CAPTURE, **context})


def test_data_capture_keys_without_a_percentage_are_refused() -> None:
    assert "need data_capture_percent" in refused(data_capture_s3_uri="s3://creative-capture/x/")


def test_serverless_refusal_names_the_fix() -> None:
    message = refused(mode="serverless", data_capture_percent="10")
    assert "Fix: drop data_capture_percent" in message
    assert "-c mode=gpu-self-managed" in message


# --- async inference and batch transform -------------------------------------------------

ASYNC = {
    "mode": "async",
    "model_data_prefix": PREFIX,
    "default_model": "creative-v3.tar.gz",
    "async_output_path": "s3://scorer-async/output",
    "async_failure_path": "s3://scorer-async/failed/",
    "async_max_concurrent_invocations": "4",
}
TOPIC_OK = f"arn:aws:sns:eu-west-1:{ACCOUNT}:scorer-async-ok"
TOPIC_ERROR = f"arn:aws:sns:eu-west-1:{ACCOUNT}:scorer-async-error"


def s3_arn(resource: str) -> dict[str, Any]:
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{resource}"]]}


def test_async_endpoint_config(synth: Any) -> None:
    s = synth(**ASYNC)
    config = s.one("AWS::SageMaker::EndpointConfig")["AsyncInferenceConfig"]
    assert config == {
        "OutputConfig": {
            "S3OutputPath": "s3://scorer-async/output/",
            "S3FailurePath": "s3://scorer-async/failed/",
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    container = s.one("AWS::SageMaker::Model")["PrimaryContainer"]
    # async has no multi-model: the single-model container and its own cache
    assert container["Mode"] == "SingleModel"
    assert container["Environment"]["SCORER_DEFAULT_MODEL"] == "creative-v3.tar.gz"
    assert s.variant()["InstanceType"] == "ml.c5.2xlarge"


def test_async_role_reads_inputs_and_writes_outputs_only_there(synth: Any) -> None:
    statements = execution_statements(synth(**ASYNC))
    assert statements["ReadAsyncInput"]["Action"] == "s3:GetObject"
    assert statements["ReadAsyncInput"]["Resource"] == s3_arn("scorer-async/async-input/*")
    assert statements["WriteAsyncOutput"]["Action"] == "s3:PutObject"
    assert statements["WriteAsyncOutput"]["Resource"] == s3_arn("scorer-async/output/*")
    assert statements["WriteAsyncFailure"]["Resource"] == s3_arn("scorer-async/failed/*")
    assert "PublishAsyncNotifications" not in statements
    outputs = synth(**ASYNC).template["Outputs"]
    assert outputs["AsyncInputPrefix"]["Value"] == "s3://scorer-async/async-input/"


def test_async_notifications(synth: Any) -> None:
    s = synth(
        **ASYNC,
        async_input_path="s3://scorer-inbox/creatives/",
        async_success_topic_arn=TOPIC_OK,
        async_error_topic_arn=TOPIC_ERROR,
        async_include_response="true",
    )
    output = s.one("AWS::SageMaker::EndpointConfig")["AsyncInferenceConfig"]["OutputConfig"]
    assert output["NotificationConfig"] == {
        "SuccessTopic": TOPIC_OK,
        "ErrorTopic": TOPIC_ERROR,
        "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"],
    }
    statements = execution_statements(s)
    assert statements["PublishAsyncNotifications"]["Action"] == "sns:Publish"
    assert sorted(statements["PublishAsyncNotifications"]["Resource"]) == sorted(
        [TOPIC_OK, TOPIC_ERROR]
    )
    assert statements["ReadAsyncInput"]["Resource"] == s3_arn("scorer-inbox/creatives/*")


def test_async_scales_to_zero_on_the_backlog(synth: Any) -> None:
    s = synth(**ASYNC, async_target_backlog_per_instance="8", max_instances="6")
    target = s.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 6)
    policies = s.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    tracking = policies["ScalingPolicy"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 8
    assert tracking["CustomizedMetricSpecification"] == {
        "Namespace": "AWS/SageMaker",
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Dimensions": [{"Name": "EndpointName", "Value": "scorer"}],
        "Statistic": "Average",
    }
    wake = policies["WakePolicy"]
    assert wake["PolicyType"] == "StepScaling"
    assert wake["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}
    ]
    alarm = s.resources("AWS::CloudWatch::Alarm")["WakeAlarm"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "scorer"}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "WakePolicy"}]


def test_async_with_a_floor_has_no_wake_policy(synth: Any) -> None:
    s = synth(**ASYNC, min_instances="1")
    assert s.one("AWS::ApplicationAutoScaling::ScalableTarget")["MinCapacity"] == 1
    assert set(s.resources("AWS::ApplicationAutoScaling::ScalingPolicy")) == {"ScalingPolicy"}
    assert "WakeAlarm" not in s.resources("AWS::CloudWatch::Alarm")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"async_output_path": None}, "mode async needs async_output_path"),
        ({"async_output_path": "scorer-async/out"}, "async_output_path 'scorer-async/out' is not"),
        ({"async_max_concurrent_invocations": "1001"}, "must lie in [1, 1000]"),
        ({"async_success_topic_arn": "scorer-ok"}, "is not an SNS topic ARN"),
        ({"async_include_response": "true"}, "give async_success_topic_arn"),
        ({"async_target_backlog_per_instance": "0"}, "must be positive"),
    ],
)
def test_async_refusals(context: dict[str, Any], message: str) -> None:
    merged = {**ASYNC, **context}
    assert message in refused(**{k: v for k, v in merged.items() if v is not None})


def test_async_with_a_multi_model_endpoint_is_refused() -> None:
    message = refused(async_output_path="s3://scorer-async/output/")
    assert "does not support multi-model endpoints" in message
    assert "Fix: -c mode=async" in message


def test_scale_to_zero_is_refused_outside_async() -> None:
    assert "needs -c mode=async" in refused(mode="gpu-self-managed", min_instances="0")


def test_transform_paths_grant_the_model_role_input_and_output(synth: Any) -> None:
    s = synth(
        mode="gpu-self-managed",
        model_data_prefix=PREFIX,
        transform_input_path="s3://scorer-batch/campaign-7/",
        transform_output_path="s3://scorer-batch/scores/",
    )
    statements = execution_statements(s)
    assert statements["ReadTransformInput"]["Resource"] == s3_arn("scorer-batch/campaign-7/*")
    assert statements["ListTransformInput"]["Condition"] == {
        "StringLike": {"s3:prefix": ["campaign-7/*"]}
    }
    assert statements["WriteTransformOutput"]["Action"] == [
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    ]
    assert statements["WriteTransformOutput"]["Resource"] == s3_arn("scorer-batch/scores/*")
    model_name = s.one("AWS::SageMaker::Model")["ModelName"]
    assert s.template["Outputs"]["ModelName"]["Value"] == model_name


@pytest.mark.parametrize(
    ("mode", "message"),
    [("cpu-multi-model", "a multi-model model"), ("inference-components", "no model")],
)
def test_transform_paths_need_a_single_model(mode: str, message: str) -> None:
    context = {
        "mode": mode,
        "inference_components": "creative-v3.tar.gz" if mode == "inference-components" else None,
        "transform_input_path": "s3://scorer-batch/in/",
        "transform_output_path": "s3://scorer-batch/out/",
    }
    text = refused(**{k: v for k, v in context.items() if v is not None})
    assert message in text
    assert "Fix: -c mode=gpu-self-managed or -c mode=async" in text


# --- CloudFormation validity -------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        SERVERLESS,
        {**SERVERLESS, "serverless_provisioned_concurrency": "2"},
        COMPONENTS,
        {**COMPONENTS, "ic_min_instances": "0"},
        {**COMPONENTS, "instance_type": "ml.c5.4xlarge"},
        {**COMPONENTS, **CAPTURE},
        {"mode": "gpu-self-managed", "model_data_prefix": PREFIX, **CAPTURE},
        {"model_data_prefix": PREFIX, **CAPTURE},
        {"data_capture_percent": "100", "data_capture_mode": "Input"},
        ASYNC,
        {
            **ASYNC,
            **CAPTURE,
            "async_success_topic_arn": TOPIC_OK,
            "async_error_topic_arn": TOPIC_ERROR,
            "async_include_response": "true",
            "transform_input_path": "s3://scorer-batch/in/",
            "transform_output_path": "s3://scorer-batch/out/",
        },
        {**ASYNC, "min_instances": "1", "instance_type": "ml.g5.xlarge"},
    ],
    ids=[
        "serverless",
        "serverless-provisioned",
        "components",
        "components-zero",
        "components-cpu",
        "components-capture",
        "gpu-capture",
        "cpu-capture",
        "capture-own-bucket",
        "async",
        "async-everything",
        "async-gpu-floor",
    ],
)
def test_mode_templates_pass_cfn_lint(synth: Any, context: dict[str, Any]) -> None:
    assert lint(synth(**context)) == []

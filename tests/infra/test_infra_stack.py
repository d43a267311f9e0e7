"""The CDK app, synthesised offline: resources, key properties, IAM scope, refusals, updates.

Each synth starts from ``infra/app.py``'s ``build_app`` with the same context the CDK CLI
would pass (``-c key=value`` gives strings). Templates are shared per module: the first
synth pays for starting Node (jsii), later ones take a fraction of a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template
from scorer_infra import EndpointSettings, Mode, ScorerEndpointStack, settings_from_context
from scorer_infra.image import parse_ecr_image_uri, read_image_detail
from scorer_infra.instance_types import Hardware, parse_instance_type
from scorer_infra.naming import content_name
from scorer_infra.s3_location import parse_s3_prefix
from scorer_infra.settings import CacheSettings, ScalingSettings

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
ACCOUNT = "123456789012"  # the documentation account id; nothing is deployed
IMAGE_V1 = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/scorer:3f2c1ab"
IMAGE_V2 = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/scorer:9d8e7f6"
REPOSITORY_ARN = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/scorer"
PREFIX = "s3://creative-models/scorer/prod/"
STACK = "ScorerEndpoint"


# --- helpers -----------------------------------------------------------------------------


def render(value: Any) -> Any:
    """Turn CloudFormation intrinsics into readable strings (``${AWS::Partition}``)."""
    if isinstance(value, list):
        return [render(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return "${" + value["Ref"] + "}"
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(str(render(p)) for p in parts)
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]
    if set(value) == {"Fn::GetAtt"}:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return {k: render(v) for k, v in value.items()}


class Synth:
    """One synthesised app: the stack, its assertions ``Template`` and rendered JSON."""

    def __init__(self, build_app: Any, context: dict[str, Any], outdir: Path) -> None:
        app = cdk.App(context=context, outdir=str(outdir))
        build_app(app)
        self.outdir = outdir
        self.stack: ScorerEndpointStack = app.node.find_child(STACK)  # type: ignore[assignment]
        self.template = Template.from_stack(self.stack)
        self.json: dict[str, Any] = render(self.template.to_json())

    def resources(self, type_name: str) -> dict[str, dict[str, Any]]:
        """Logical id -> resource, for every resource of one type."""
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_name}

    def one(self, type_name: str) -> dict[str, Any]:
        """The properties of the only resource of ``type_name``."""
        (resource,) = self.resources(type_name).values()
        return resource["Properties"]

    def alarms(self) -> dict[str, dict[str, Any]]:
        """Alarm properties by metric name."""
        found = self.resources("AWS::CloudWatch::Alarm").values()
        return {a["Properties"]["MetricName"]: a["Properties"] for a in found}

    def execution_policy(self) -> list[dict[str, Any]]:
        """The statements of the role that SageMaker assumes."""
        roles = [
            r["Properties"]
            for r in self.resources("AWS::IAM::Role").values()
            if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
            == {"Service": "sagemaker.amazonaws.com"}
        ]
        (role,) = roles
        (policy,) = role["Policies"]
        return policy["PolicyDocument"]["Statement"]


def statement(statements: list[dict[str, Any]], sid: str) -> dict[str, Any]:
    (found,) = [s for s in statements if s.get("Sid") == sid]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- shared synths -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_app(cdk_app_module: ModuleType) -> Any:
    return cdk_app_module.build_app


@pytest.fixture(scope="module")
def cpu(build_app: Any, archives_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """cpu-multi-model with a given prefix, archives copied there, CLI-style string values."""
    context = {
        "image_uri": IMAGE_V1,
        "model_data_prefix": PREFIX,
        "model_archives_dir": str(archives_dir),
        "environment": '{"SCORER_DEVICE": "cpu", "SCORER_THREADS_PER_WORKER": 2}',
        "initial_instance_count": "2",
        "min_instances": "2",
        "max_instances": "6",
        "target_invocations_per_instance": "300",
        "alarm_model_latency_ms": "250",
        "alarm_5xx_per_minute": "3",
        "alarm_cache_hit_rate_min": "0.6",
    }
    return Synth(build_app, context, tmp_path_factory.mktemp("cpu"))


@pytest.fixture(scope="module")
def gpu(build_app: Any, archive_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """gpu-self-managed with one archive uploaded as an asset, no autoscaling."""
    context = {
        "mode": "gpu-self-managed",
        "image_uri": IMAGE_V1,
        "endpoint_name": "scorer-gpu",
        "model_archive_file": str(archive_file),
        "cache_max_models": 8,
        "cache_gpu_memory_fraction": 0.8,
        "autoscaling": False,
        "alarm_gpu_memory_percent": 85,
    }
    return Synth(build_app, context, tmp_path_factory.mktemp("gpu"))


@pytest.fixture(scope="module")
def bare(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """No context at all, as on a fresh clone."""
    return Synth(build_app, {}, tmp_path_factory.mktemp("bare"))


# --- cpu-multi-model ---------------------------------------------------------------------


def test_cpu_stack_has_the_three_sagemaker_resources_scaling_and_alarms(cpu: Synth) -> None:
    t = cpu.template
    t.resource_count_is("AWS::SageMaker::Model", 1)
    t.resource_count_is("AWS::SageMaker::EndpointConfig", 1)
    t.resource_count_is("AWS::SageMaker::Endpoint", 1)
    t.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 1)
    t.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 1)
    t.resource_count_is("Custom::CDKBucketDeployment", 1)
    assert set(cpu.resources("AWS::SageMaker::Endpoint")) == {"Endpoint"}


def test_cpu_model_is_multi_model_on_the_prefix(cpu: Synth) -> None:
    model = cpu.one("AWS::SageMaker::Model")
    container = model["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["Image"] == IMAGE_V1
    assert container["ModelDataUrl"] == PREFIX
    # SageMaker injects SAGEMAKER_MULTI_MODEL itself; numbers arrive as strings; the stack
    # sets the EMF namespace (metrics_namespace) that the role and the alarms use
    assert container["Environment"] == {
        "SCORER_DEVICE": "cpu",
        "SCORER_THREADS_PER_WORKER": "2",
        "SCORER_METRICS_NAMESPACE": "scorer",
    }
    assert model["ExecutionRoleArn"].startswith("${ExecutionRole")


def test_cpu_endpoint_config_variant(cpu: Synth) -> None:
    model_name = cpu.one("AWS::SageMaker::Model")["ModelName"]
    (variant,) = cpu.one("AWS::SageMaker::EndpointConfig")["ProductionVariants"]
    assert variant == {
        "VariantName": "AllTraffic",
        "ModelName": model_name,
        "InstanceType": "ml.c5.2xlarge",
        "InitialInstanceCount": 2,
        "InitialVariantWeight": 1,
    }


def test_cpu_endpoint_updates_blue_green_with_alarm_rollback(cpu: Synth) -> None:
    endpoint = cpu.one("AWS::SageMaker::Endpoint")
    config = cpu.one("AWS::SageMaker::EndpointConfig")
    assert endpoint["EndpointName"] == "scorer"
    assert endpoint["EndpointConfigName"] == config["EndpointConfigName"]
    assert endpoint["RetainAllVariantProperties"] is True
    deployment = endpoint["DeploymentConfig"]
    assert deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 300,
    }
    rollback = [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]]
    assert rollback == ["scorer-invocation-5xx", "scorer-model-latency"]
    alarms = cpu.alarms()
    assert alarms["Invocation5XXErrors"]["AlarmName"] == rollback[0]
    assert alarms["ModelLatency"]["AlarmName"] == rollback[1]
    depends_on = cpu.json["Resources"]["Endpoint"]["DependsOn"]
    assert "EndpointConfig" in depends_on
    assert any(d.startswith("ModelFilesArchives") for d in depends_on)
    assert {d for d in depends_on if "Alarm" in d} == {
        k
        for k, v in cpu.resources("AWS::CloudWatch::Alarm").items()
        if v["Properties"]["AlarmName"] in rollback
    }


def test_cpu_autoscaling_tracks_invocations_per_instance(cpu: Synth) -> None:
    target = cpu.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == 2
    assert target["MaxCapacity"] == 6
    assert target["ResourceId"] == "endpoint/scorer/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ServiceNamespace"] == "sagemaker"
    assert "Endpoint" in cpu.json["Resources"]["ScalableTarget"]["DependsOn"]
    policy = cpu.one("AWS::ApplicationAutoScaling::ScalingPolicy")
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert config["TargetValue"] == 300
    assert config["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }


def test_cpu_alarms_metrics_and_thresholds(cpu: Synth) -> None:
    alarms = cpu.alarms()
    assert set(alarms) == {
        "Invocation5XXErrors",
        "ModelLatency",
        "ModelLoadingWaitTime",
        "ModelCacheHit",
    }
    dims = [
        {"Name": "EndpointName", "Value": "scorer"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    for alarm in alarms.values():
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert alarm["Dimensions"] == dims
        assert alarm["TreatMissingData"] == "notBreaching"
    assert alarms["Invocation5XXErrors"]["Threshold"] == 3
    assert alarms["Invocation5XXErrors"]["Statistic"] == "Sum"
    assert alarms["ModelLatency"]["Threshold"] == 250_000  # 250 ms in microseconds
    assert alarms["ModelLoadingWaitTime"]["Threshold"] == 30_000_000  # default 30 s
    cache = alarms["ModelCacheHit"]
    assert (cache["Threshold"], cache["ComparisonOperator"]) == (0.6, "LessThanThreshold")
    assert cache["Statistic"] == "Average"


def test_cpu_execution_role_is_scoped_to_prefix_repository_and_logs(cpu: Synth) -> None:
    statements = cpu.execution_policy()
    read = statement(statements, "ReadModelData")
    assert read["Action"] == "s3:GetObject"
    assert read["Resource"] == "arn:${AWS::Partition}:s3:::creative-models/scorer/prod/*"
    listing = statement(statements, "ListModelData")
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == "arn:${AWS::Partition}:s3:::creative-models"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["scorer/prod/*"]}}
    pull = statement(statements, "PullImage")
    assert sorted(pull["Action"]) == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ]
    assert pull["Resource"] == REPOSITORY_ARN
    logs = statement(statements, "WriteEndpointLogs")
    assert [r.rsplit(":log-group:", 1)[1] for r in logs["Resource"]] == [
        "/aws/sagemaker/Endpoints/scorer",
        "/aws/sagemaker/Endpoints/scorer:*",
    ]
    metrics = statement(statements, "PutScorerMetrics")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "scorer"}}


def test_cpu_execution_role_has_no_wildcard_on_s3_or_ecr(cpu: Synth) -> None:
    wildcard = [s for s in cpu.execution_policy() if "*" in as_list(s["Resource"])]
    assert sorted(a for s in wildcard for a in as_list(s["Action"])) == [
        "cloudwatch:PutMetricData",
        "ecr:GetAuthorizationToken",
    ]
    for s in cpu.execution_policy():
        for action in as_list(s["Action"]):
            assert not action.endswith("*"), action


def test_cpu_archives_are_staged_offline_and_copied_to_the_prefix(cpu: Synth) -> None:
    deployment = cpu.one("Custom::CDKBucketDeployment")
    assert deployment["DestinationBucketName"] == "creative-models"
    assert deployment["DestinationBucketKeyPrefix"] == "scorer/prod/"
    assert deployment["Prune"] is False
    staged = [p for p in cpu.outdir.glob("asset.*") if (p / "creative-v1.tar.gz").is_file()]
    assert len(staged) == 1
    assert (staged[0] / "creative-v2.tar.gz").is_file()


def test_cpu_stack_outputs(cpu: Synth) -> None:
    outputs = {k: v["Value"] for k, v in cpu.json["Outputs"].items()}
    assert outputs["EndpointName"] == "scorer"
    assert outputs["ImageUri"] == IMAGE_V1
    assert outputs["ModelDataPrefix"] == PREFIX


# --- gpu-self-managed --------------------------------------------------------------------


def test_gpu_model_is_single_model_with_the_container_cache_settings(gpu: Synth) -> None:
    container = gpu.one("AWS::SageMaker::Model")["PrimaryContainer"]
    asset = gpu.stack.model_files.asset
    assert asset is not None
    key = gpu.stack.resolve(asset.s3_object_key)
    bucket = render(gpu.stack.resolve(asset.s3_bucket_name))
    assert key.endswith(".gz") and len(key) == 64 + len(".gz")  # sha256 of the content
    assert container["Mode"] == "SingleModel"
    assert "ModelDataUrl" not in container
    assert container["Environment"] == {
        "SCORER_MODEL_PREFIX": f"s3://{bucket}/",
        "SCORER_DEFAULT_MODEL": key,
        "SCORER_CACHE_MAX_MODELS": "8",
        "SCORER_CACHE_GPU_MEMORY_FRACTION": "0.8",
        "SCORER_METRICS_NAMESPACE": "scorer",
    }
    assert gpu.json["Outputs"]["AssetModelName"]["Value"] == key
    assert (gpu.outdir / f"asset.{key.removesuffix('.gz')}.tar.gz").is_file()


def test_gpu_endpoint_config_uses_a_gpu_instance(gpu: Synth) -> None:
    (variant,) = gpu.one("AWS::SageMaker::EndpointConfig")["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["InitialInstanceCount"] == 1
    assert gpu.one("AWS::SageMaker::Endpoint")["EndpointName"] == "scorer-gpu"


def test_gpu_without_autoscaling_has_no_scalable_target(gpu: Synth) -> None:
    gpu.template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    gpu.template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 0)
    assert gpu.one("AWS::SageMaker::Endpoint")["RetainAllVariantProperties"] is False


def test_gpu_alarms_watch_gpu_memory_not_platform_cache(gpu: Synth) -> None:
    alarms = gpu.alarms()
    assert set(alarms) == {"Invocation5XXErrors", "ModelLatency", "GPUMemoryUtilization"}
    memory = alarms["GPUMemoryUtilization"]
    assert memory["Namespace"] == "/aws/sagemaker/Endpoints"
    assert memory["Threshold"] == 85
    assert memory["ComparisonOperator"] == "GreaterThanThreshold"
    assert memory["Dimensions"] == [
        {"Name": "EndpointName", "Value": "scorer-gpu"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]


def test_gpu_role_reads_only_the_asset_object(gpu: Synth) -> None:
    asset = gpu.stack.model_files.asset
    assert asset is not None
    key = gpu.stack.resolve(asset.s3_object_key)
    bucket = render(gpu.stack.resolve(asset.s3_bucket_name))
    statements = gpu.execution_policy()
    assert statement(statements, "ReadModelData")["Resource"] == (
        f"arn:${{AWS::Partition}}:s3:::{bucket}/{key}"
    )
    assert statement(statements, "ListModelData")["Condition"] == {
        "StringLike": {"s3:prefix": [key]}
    }
    assert statement(statements, "PullImage")["Resource"] == REPOSITORY_ARN


# --- a fresh clone -----------------------------------------------------------------------


def test_bare_context_synthesises_with_a_private_bucket_and_default_image(bare: Synth) -> None:
    bucket_id = next(iter(bare.resources("AWS::S3::Bucket")))
    container = bare.one("AWS::SageMaker::Model")["PrimaryContainer"]
    assert container["ModelDataUrl"] == f"s3://${{{bucket_id}}}/models/"
    assert (
        container["Image"]
        == "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/scorer:latest"
    )
    (variant,) = bare.one("AWS::SageMaker::EndpointConfig")["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c5.2xlarge"
    assert statement(bare.execution_policy(), "PullImage")["Resource"] == (
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/scorer"
    )
    bare.template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})
    Annotations.from_stack(bare.stack).has_warning(
        "*", Match.string_like_regexp("no image_uri or image_detail given")
    )


def test_app_entry_point_synthesises_offline_from_image_detail(tmp_path: Path) -> None:
    """What `cdk synth -c image_detail=...` does: run app.py with the CLI's environment."""
    detail = tmp_path / "imageDetail.json"
    detail.write_text(json.dumps({"ImageURI": IMAGE_V2}))
    outdir = tmp_path / "cdk.out"
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({"image_detail": str(detail)}),
    }
    subprocess.run(
        [sys.executable, "app.py"], cwd=INFRA_DIR, env=env, check=True, capture_output=True
    )
    template = json.loads((outdir / f"{STACK}.template.json").read_text())
    models = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model"]
    assert [m["Properties"]["PrimaryContainer"]["Image"] for m in models] == [IMAGE_V2]


# --- in-place updates --------------------------------------------------------------------


def _names(build_app: Any, context: dict[str, Any], outdir: Path) -> dict[str, Any]:
    synth = Synth(build_app, context, outdir)
    (endpoint_id,) = synth.resources("AWS::SageMaker::Endpoint")
    endpoint = synth.one("AWS::SageMaker::Endpoint")
    return {
        "endpoint_id": endpoint_id,
        "endpoint_name": endpoint["EndpointName"],
        "endpoint_config_ref": endpoint["EndpointConfigName"],
        "config_ids": set(synth.resources("AWS::SageMaker::EndpointConfig")),
        "config_name": synth.one("AWS::SageMaker::EndpointConfig")["EndpointConfigName"],
        "model_name": synth.one("AWS::SageMaker::Model")["ModelName"],
    }


@pytest.fixture(scope="module")
def base_names(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    context = {"image_uri": IMAGE_V1, "model_data_prefix": PREFIX}
    return _names(build_app, context, tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize(
    ("change", "model_changes"),
    [
        ({"image_uri": IMAGE_V2}, True),
        ({"environment": {"SCORER_DEVICE": "cpu"}}, True),
        ({"instance_type": "ml.c5.4xlarge"}, False),
    ],
    ids=["image", "environment", "instance-type"],
)
def test_change_makes_a_new_endpoint_config_and_updates_the_endpoint_in_place(
    build_app: Any,
    base_names: dict[str, Any],
    tmp_path: Path,
    change: dict[str, Any],
    model_changes: bool,
) -> None:
    context = {"image_uri": IMAGE_V1, "model_data_prefix": PREFIX, **change}
    after = _names(build_app, context, tmp_path)
    # the endpoint is the same resource with the same name: CloudFormation updates it
    assert after["endpoint_id"] == base_names["endpoint_id"] == "Endpoint"
    assert after["endpoint_name"] == base_names["endpoint_name"] == "scorer"
    # a new, differently named endpoint config (and model) replaces the old one
    assert after["config_ids"] == base_names["config_ids"] == {"EndpointConfig"}
    assert after["config_name"] != base_names["config_name"]
    assert after["endpoint_config_ref"] == after["config_name"]
    assert (after["model_name"] != base_names["model_name"]) is model_changes


def test_scaling_or_alarm_change_keeps_model_and_endpoint_config(
    build_app: Any, base_names: dict[str, Any], tmp_path: Path
) -> None:
    context = {
        "image_uri": IMAGE_V1,
        "model_data_prefix": PREFIX,
        "max_instances": 8,
        "alarm_model_latency_ms": 400,
    }
    assert _names(build_app, context, tmp_path) == base_names


def test_resource_names_fit_sagemaker_limits(base_names: dict[str, Any]) -> None:
    for name in (base_names["config_name"], base_names["model_name"]):
        assert len(name) <= 63
    stack = cdk.Stack(cdk.App(), "Names")
    long_name = content_name(stack, "e" * 63 + "-model", {"x": 1})
    assert len(long_name) == 63
    assert content_name(stack, "p", {"a": 1, "b": 2}) == content_name(stack, "p", {"b": 2, "a": 1})


# --- refusals and warnings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "instance_type", ["ml.g5.xlarge", "ml.g4dn.xlarge", "ml.p3.2xlarge", "ml.p4d.24xlarge"]
)
def test_gpu_instance_with_multi_model_endpoint_is_refused(
    build_app: Any, instance_type: str
) -> None:
    app = cdk.App(context={"image_uri": IMAGE_V1, "instance_type": instance_type})
    with pytest.raises(ValueError, match="CPU instances only") as refused:
        build_app(app)
    message = str(refused.value)
    assert instance_type in message
    assert "-c mode=gpu-self-managed" in message


@pytest.mark.parametrize("mode", [m.value for m in Mode if m is not Mode.SERVERLESS])
@pytest.mark.parametrize("instance_type", ["ml.inf2.xlarge", "ml.trn1.2xlarge"])
def test_accelerator_instances_are_refused_with_instances(mode: str, instance_type: str) -> None:
    context = {"mode": mode, "instance_type": instance_type}
    with pytest.raises(ValueError, match="Inferentia/Trainium"):
        settings_from_context(context.get)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"mode": "multi"}, "not one of cpu-multi-model, gpu-self-managed"),
        ({"image_uri": "docker.io/library/scorer:1"}, "not an Amazon ECR image URI"),
        ({"image_uri": IMAGE_V1, "image_detail": "imageDetail.json"}, "not both"),
        ({"cache_max_models": "4"}, "apply only with -c mode=gpu-self-managed"),
        ({"environment": '{"SCORER_MODEL_PREFIX": "s3://b/p/"}'}, "'model_data_prefix'"),
        ({"environment": "SCORER_DEVICE=cpu"}, "must be a JSON object"),
        ({"model_data_prefix": "creative-models/scorer/"}, "not an S3 URL"),
        ({"initial_instance_count": "5", "max_instances": "4"}, "must lie within"),
        ({"min_instances": "3", "max_instances": "2"}, "min_instances <= max_instances"),
        ({"alarm_cache_hit_rate_min": "70"}, "ratio in"),
        ({"traffic_routing": "blue"}, "traffic_routing 'BLUE' is not one of"),
        ({"endpoint_name": "scorer_prod"}, "not a valid SageMaker name"),
        ({"autoscaling": "maybe"}, "must be true or false"),
    ],
)
def test_invalid_context_is_refused_with_a_clear_message(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        settings_from_context(context.get)


def test_asset_and_prefix_together_are_refused(archive_file: Path) -> None:
    context = {"model_archive_file": str(archive_file), "model_data_prefix": PREFIX}
    with pytest.raises(ValueError, match="use model_archives_dir"):
        settings_from_context(context.get)


def test_prune_of_a_bucket_root_is_refused(archives_dir: Path) -> None:
    context = {
        "model_data_prefix": "s3://creative-models/",
        "model_archives_dir": str(archives_dir),
        "prune_model_archives": "true",
    }
    with pytest.raises(ValueError, match="delete every other object"):
        settings_from_context(context.get)


def test_image_region_must_match_the_stack_region() -> None:
    app = cdk.App()
    settings = EndpointSettings(image_uri=IMAGE_V1)
    with pytest.raises(ValueError, match="SageMaker pulls the image from ECR in the endpoint"):
        ScorerEndpointStack(
            app, "Elsewhere", settings=settings, env=cdk.Environment(region="us-east-1")
        )


def test_self_managed_on_cpu_and_moving_tag_are_warnings(tmp_path: Path) -> None:
    settings = EndpointSettings(
        image_uri=f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/scorer:latest",
        mode=Mode.GPU_SELF_MANAGED,
        instance_type="ml.c5.xlarge",
        cache=CacheSettings(max_models=4),
        scaling=ScalingSettings(enabled=False),
    )
    stack = ScorerEndpointStack(cdk.App(outdir=str(tmp_path)), "Warned", settings=settings)
    annotations = Annotations.from_stack(stack)
    annotations.has_warning("*", Match.string_like_regexp("gpu-self-managed on the CPU instance"))
    annotations.has_warning("*", Match.string_like_regexp("uses a moving tag"))
    alarms = Template.from_stack(stack).find_resources("AWS::CloudWatch::Alarm")
    assert {a["Properties"]["MetricName"] for a in alarms.values()} == {
        "Invocation5XXErrors",
        "ModelLatency",
    }


# --- parsing -----------------------------------------------------------------------------


def test_image_uri_parsing_derives_the_repository_arn() -> None:
    image = parse_ecr_image_uri(f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/team/scorer:v1.2")
    assert image.repository_arn == f"arn:aws:ecr:us-west-2:{ACCOUNT}:repository/team/scorer"
    assert image.pinned
    digest = "sha256:" + "a" * 64
    china = parse_ecr_image_uri(f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/scorer@{digest}")
    assert china.repository_arn == f"arn:aws-cn:ecr:cn-north-1:{ACCOUNT}:repository/scorer"
    assert (china.tag, china.digest, china.pinned) == (None, digest, True)
    untagged = parse_ecr_image_uri(f"{ACCOUNT}.dkr.ecr.us-gov-west-1.amazonaws.com/scorer")
    assert (untagged.partition, untagged.tag, untagged.pinned) == ("aws-us-gov", "latest", False)
    for bad in (
        "scorer:latest",
        "public.ecr.aws/acme/scorer:1",
        f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/Scorer:1",
    ):
        with pytest.raises(ValueError, match="not an Amazon ECR image URI"):
            parse_ecr_image_uri(bad)


def test_image_detail_is_read_as_codebuild_writes_it(tmp_path: Path) -> None:
    detail = tmp_path / "imageDetail.json"
    detail.write_text(json.dumps({"ImageURI": IMAGE_V1}))
    assert read_image_detail(detail) == IMAGE_V1
    settings = settings_from_context({"image_detail": "imageDetail.json"}.get, base_dir=tmp_path)
    assert settings.image_uri == IMAGE_V1
    detail.write_text("{}")
    with pytest.raises(ValueError, match='no "ImageURI"'):
        read_image_detail(detail)
    with pytest.raises(ValueError, match="does not exist"):
        read_image_detail(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("name", "hardware", "arm64"),
    [
        ("ml.c5.2xlarge", Hardware.CPU, False),
        ("ml.m5d.large", Hardware.CPU, False),
        ("ml.c7g.xlarge", Hardware.CPU, True),
        ("ml.g5.xlarge", Hardware.GPU, False),
        ("ml.g4dn.xlarge", Hardware.GPU, False),
        ("ml.g6e.2xlarge", Hardware.GPU, False),
        ("ml.p4de.24xlarge", Hardware.GPU, False),
        ("ml.inf2.xlarge", Hardware.ACCELERATOR, False),
        ("ml.trn1n.32xlarge", Hardware.ACCELERATOR, False),
    ],
)
def test_instance_types_are_classified(name: str, hardware: Hardware, arm64: bool) -> None:
    parsed = parse_instance_type(name)
    assert (parsed.hardware, parsed.arm64) == (hardware, arm64)


def test_s3_prefix_is_normalised() -> None:
    assert parse_s3_prefix("s3://creative-models/scorer").url == "s3://creative-models/scorer/"
    assert parse_s3_prefix("s3://creative-models").key_prefix == ""
    with pytest.raises(ValueError, match="valid bucket name"):
        parse_s3_prefix("s3://Creative_Models/x/")


# --- CloudFormation validity -------------------------------------------------------------


def test_templates_pass_cfn_lint(cpu: Synth, gpu: Synth, bare: Synth) -> None:
    cfnlint_api = pytest.importorskip("cfnlint.api")
    for synth in (cpu, gpu, bare):
        template = json.dumps(synth.template.to_json())
        matches = cfnlint_api.lint(template, regions=["eu-west-1"])
        # W3005 (a redundant DependsOn) is in CDK's own BucketDeployment and harmless
        found = [str(m) for m in matches if m.rule.id[0] in "EW" and m.rule.id != "W3005"]
        assert found == []

"""The endpoint's execution role: read the model data, pull the image, write its own logs.

Each statement names the narrowest resource IAM allows. The only ``*`` resources are the
two actions that cannot be scoped to a resource: ``ecr:GetAuthorizationToken`` and
``cloudwatch:PutMetricData`` (the latter limited by a namespace condition instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from constructs import Construct

from scorer_infra.image import EcrImage

ECR_PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)
LOG_ACTIONS = (
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
)


@dataclass(frozen=True)
class ModelDataAccess:
    """What the role may read in S3: objects matching ``bucket/key_pattern``.

    ``key_pattern`` is ``prefix/*`` for a prefix, or one object key for a single asset; it
    also bounds ``s3:ListBucket`` through the ``s3:prefix`` condition.
    """

    bucket_name: str
    key_pattern: str
    kms_key_arn: str | None = None


def endpoint_log_group_arns(endpoint_name: str) -> list[str]:
    """The ARNs of the endpoint's log group ``/aws/sagemaker/Endpoints/<name>`` and its streams."""
    group = (
        f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
        f"/aws/sagemaker/Endpoints/{endpoint_name}"
    )
    return [group, f"{group}:*"]


def execution_role_statements(
    *,
    image: EcrImage,
    model_data: ModelDataAccess,
    endpoint_name: str,
    metrics_namespace: str,
) -> list[iam.PolicyStatement]:
    """The least-privilege statements the endpoint's container and SageMaker need."""
    bucket_arn = f"arn:{Aws.PARTITION}:s3:::{model_data.bucket_name}"
    statements = [
        iam.PolicyStatement(
            sid="ReadModelData",
            actions=["s3:GetObject"],
            resources=[f"{bucket_arn}/{model_data.key_pattern}"],
        ),
        iam.PolicyStatement(
            sid="ListModelData",
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [model_data.key_pattern]}},
        ),
        iam.PolicyStatement(
            sid="PullImage",
            actions=list(ECR_PULL_ACTIONS),
            resources=[image.repository_arn],
        ),
        iam.PolicyStatement(
            sid="EcrLogin",
            actions=["ecr:GetAuthorizationToken"],
            resources=["*"],
        ),
        iam.PolicyStatement(
            sid="WriteEndpointLogs",
            actions=list(LOG_ACTIONS),
            resources=endpoint_log_group_arns(endpoint_name),
        ),
        iam.PolicyStatement(
            sid="PutScorerMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": metrics_namespace}},
        ),
    ]
    if model_data.kms_key_arn is not None:
        statements.append(
            iam.PolicyStatement(
                sid="DecryptModelData",
                actions=["kms:Decrypt"],
                resources=[model_data.kms_key_arn],
            )
        )
    return statements


def s3_prefix_statement(
    sid: str, actions: Sequence[str], bucket: str, key_prefix: str
) -> iam.PolicyStatement:
    """Allow ``actions`` on the objects under ``s3://bucket/key_prefix`` (and nothing else)."""
    return iam.PolicyStatement(
        sid=sid,
        actions=list(actions),
        resources=[f"arn:{Aws.PARTITION}:s3:::{bucket}/{key_prefix}*"],
    )


def execution_role(
    scope: Construct,
    construct_id: str,
    *,
    image: EcrImage,
    model_data: ModelDataAccess,
    endpoint_name: str,
    metrics_namespace: str,
    extra: Sequence[iam.PolicyStatement] = (),
) -> iam.Role:
    """An IAM role that SageMaker assumes to run the endpoint, with only an inline policy.

    ``extra`` are the statements a mode or option adds (data capture, async outputs).
    """
    statements = execution_role_statements(
        image=image,
        model_data=model_data,
        endpoint_name=endpoint_name,
        metrics_namespace=metrics_namespace,
    )
    statements.extend(extra)
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description=f"Execution role of the SageMaker endpoint {endpoint_name} (scorer)",
        inline_policies={"endpoint": iam.PolicyDocument(statements=statements)},
    )

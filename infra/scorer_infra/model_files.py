"""Where the endpoint reads model archives, and the two ways CDK can put them there.

* ``model_archives_dir`` -> ``BucketDeployment``: copies a directory to the model prefix,
  keeping its layout (``creative-v3.tar.gz`` stays ``creative-v3.tar.gz``), so callers
  invoke ``TargetModel=creative-v3.tar.gz``. Files removed from the directory stay in S3
  unless ``prune_model_archives`` is set; the copy runs in a Lambda function at deploy time.
* ``model_archive_file`` -> ``s3_assets.Asset``: uploads one archive to the CDK assets
  bucket under its content digest (``<sha256>.gz``); the prefix is that bucket and the
  role may read that one object only. A changed file gets a new name, so no endpoint ever
  serves a stale cached copy, but old digests pile up in the assets bucket.

With neither, the stack creates a private bucket and uses its ``models/`` prefix; with
``model_data_prefix`` alone it uses that existing prefix as is.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Size
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from scorer_infra.role import ModelDataAccess
from scorer_infra.s3_location import S3Prefix
from scorer_infra.settings import EndpointSettings

DEFAULT_KEY_PREFIX = "models/"
DEPLOYMENT_MEMORY_MB = 1024
DEPLOYMENT_DISK = Size.gibibytes(10)



def private_bucket(scope: Construct, construct_id: str) -> s3.Bucket:
    """A bucket the stack creates: no public access, encrypted, TLS only, kept on delete."""
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        removal_policy=RemovalPolicy.RETAIN,
    )

class ModelFiles(Construct):
    """The model data location of one endpoint, with the upload that fills it (if any)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EndpointSettings):
        super().__init__(scope, construct_id)
        self.deployment: s3_deployment.BucketDeployment | None = None
        self.asset: s3_assets.Asset | None = None
        #: the model an asset-backed endpoint serves (its object key), else None
        self.asset_model_name: str | None = None

        if settings.model_archive_file is not None:
            self.asset = s3_assets.Asset(self, "Archive", path=str(settings.model_archive_file))
            self.bucket: s3.IBucket = self.asset.bucket
            self.prefix = S3Prefix(bucket=self.asset.s3_bucket_name, key_prefix="")
            self.asset_model_name = self.asset.s3_object_key
            self.access = ModelDataAccess(
                bucket_name=self.asset.s3_bucket_name,
                key_pattern=self.asset.s3_object_key,
                kms_key_arn=settings.model_data_kms_key_arn,
            )
            return

        given = settings.model_prefix
        if given is None:
            bucket = private_bucket(self, "Bucket")
            self.bucket = bucket
            self.prefix = S3Prefix(bucket=bucket.bucket_name, key_prefix=DEFAULT_KEY_PREFIX)
        else:
            self.bucket = s3.Bucket.from_bucket_name(self, "Bucket", given.bucket)
            self.prefix = given
        self.access = ModelDataAccess(
            bucket_name=self.prefix.bucket,
            key_pattern=f"{self.prefix.key_prefix}*",
            kms_key_arn=settings.model_data_kms_key_arn,
        )

        if settings.model_archives_dir is not None:
            self.deployment = s3_deployment.BucketDeployment(
                self,
                "Archives",
                sources=[s3_deployment.Source.asset(str(settings.model_archives_dir))],
                destination_bucket=self.bucket,
                destination_key_prefix=self.prefix.key_prefix or None,
                prune=settings.prune_model_archives,
                retain_on_delete=True,
                output_object_keys=False,
                memory_limit=DEPLOYMENT_MEMORY_MB,
                ephemeral_storage_size=DEPLOYMENT_DISK,
            )

"""The scorer endpoint stack: model, endpoint config and endpoint as L1 constructs.

The three SageMaker resources are ``CfnModel`` -> ``CfnEndpointConfig`` -> ``CfnEndpoint``.
The model and endpoint config are immutable in SageMaker, so their names carry a digest of
their properties (see :mod:`scorer_infra.naming`); the endpoint keeps its logical id and
name and is updated in place, blue/green, rolled back by the 5xx and latency alarms.

``ContainerMetricsConfig`` (what SageMaker scrapes from the container) is a property of the
container definition that neither this CDK version nor cfn-lint's schema knows yet; with
``-c container_metrics_config=true`` it is written with a property override (docs/infra.md).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, Aws, CfnOutput, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from scorer_infra import container_env
from scorer_infra.alarms import endpoint_alarms
from scorer_infra.hosting import component_name
from scorer_infra.image import EcrImage
from scorer_infra.instance_types import Hardware
from scorer_infra.model_files import ModelFiles, private_bucket
from scorer_infra.naming import content_name
from scorer_infra.role import execution_role, s3_prefix_statement
from scorer_infra.s3_location import S3Prefix, parse_s3_prefix
from scorer_infra.scaling import (
    async_scaling,
    component_scaling,
    provisioned_concurrency_scaling,
    variant_scaling,
)
from scorer_infra.settings import EndpointSettings, Mode

_IC = sagemaker.CfnInferenceComponent


def _url(url: str | None, key: str) -> str | None:
    """An S3 prefix as given, normalised to end with ``/`` (None stays None)."""
    return None if url is None else parse_s3_prefix(url, key=key).url


#: the key prefix of captured data in the bucket the stack creates for it
DATA_CAPTURE_KEY_PREFIX = "data-capture/"


class ScorerEndpointStack(Stack):
    """A SageMaker real-time endpoint running the scorer image in one of two modes."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EndpointSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        image = settings.image
        self._check_region(image)
        self._warn(image)

        self.model_files = ModelFiles(self, "ModelFiles", settings=settings)
        self.data_capture_prefix: S3Prefix | None = None
        extra: list[iam.PolicyStatement] = []
        if settings.data_capture.enabled:
            self.data_capture_prefix = self._data_capture_prefix()
            extra += self._data_capture_statements(self.data_capture_prefix)
        self.async_input_prefix: S3Prefix | None = None
        if settings.mode is Mode.ASYNC:
            extra += self._async_statements()
        if settings.transform.is_set():
            extra += self._transform_statements()
        self.role = execution_role(
            self,
            "ExecutionRole",
            image=image,
            model_data=self.model_files.access,
            endpoint_name=settings.endpoint_name,
            metrics_namespace=settings.metrics_namespace,
            extra=extra,
        )

        components = settings.mode is Mode.INFERENCE_COMPONENTS
        # an inference-component endpoint has no model: each component names its container
        self.model: sagemaker.CfnModel | None = None
        model_name: str | None = None
        if not components:
            model_name = self._model(image)
        variant = self._variant(model_name)
        metrics_config = self._metrics_config()
        data_capture = self._data_capture_config()
        async_config = self._async_config()
        # the role is on the config only when no model carries it (inference components)
        role_arn = self.role.role_arn if components else None
        named_config: dict[str, Any] = {"variants": [variant]}
        if metrics_config is not None:
            named_config["metrics"] = metrics_config
        if role_arn is not None:
            named_config["role"] = role_arn
        if data_capture is not None:
            named_config["data_capture"] = data_capture
        if async_config is not None:
            named_config["async"] = async_config
        config_name = content_name(
            self,
            f"{settings.endpoint_name}-config",
            # the original form of the digest input, so existing endpoints keep their names
            [variant] if list(named_config) == ["variants"] else named_config,
        )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            endpoint_config_name=config_name,
            production_variants=[variant],
            metrics_config=metrics_config,
            execution_role_arn=role_arn,
            data_capture_config=data_capture,
            async_inference_config=async_config,
        )
        if self.model is not None:
            self.endpoint_config.node.add_dependency(self.model)

        self.alarms = endpoint_alarms(self, settings)
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=settings.endpoint_name,
            endpoint_config_name=config_name,
            # inference components roll out on their own (each has its own update policy)
            deployment_config=None if components else self._deployment_config(),
            # with autoscaling, an update keeps the instance count it has scaled to
            retain_all_variant_properties=settings.scaling.enabled
            and (
                settings.mode is not Mode.SERVERLESS
                or bool(settings.serverless.provisioned_concurrency)
            ),
        )
        self.endpoint.node.add_dependency(self.endpoint_config)
        for alarm in self.alarms.rollback:
            self.endpoint.node.add_dependency(alarm)
        if self.model_files.deployment is not None:
            self.endpoint.node.add_dependency(self.model_files.deployment)

        self.components: list[sagemaker.CfnInferenceComponent] = []
        if components:
            self._inference_components(image)
        elif settings.mode is Mode.SERVERLESS:
            if settings.scaling.enabled and settings.serverless.provisioned_concurrency:
                target, _ = provisioned_concurrency_scaling(self, settings)
                target.node.add_dependency(self.endpoint)
        elif settings.mode is Mode.ASYNC:
            if settings.scaling.enabled:
                async_scaling(self, settings).node.add_dependency(self.endpoint)
        elif settings.scaling.enabled:
            target, _ = variant_scaling(self, settings)
            target.node.add_dependency(self.endpoint)

        self._outputs(image)

    def _model(self, image: EcrImage) -> str:
        """Create the SageMaker model; return its content-derived name."""
        settings = self.settings
        container = self._container(image)
        scraped = self._container_metrics_config()
        named: dict[str, Any] = {"role": self.role.role_arn, "container": container}
        if scraped is not None:
            named["container_metrics_config"] = scraped
        model_name = content_name(self, f"{settings.endpoint_name}-model", named)
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            model_name=model_name,
            execution_role_arn=self.role.role_arn,
            primary_container=container,
        )
        if scraped is not None:
            # the escape hatch: a raw CloudFormation property on the L1 resource
            self.model.add_property_override("PrimaryContainer.ContainerMetricsConfig", scraped)
        return model_name

    def _variant(
        self, model_name: str | None
    ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        settings = self.settings
        startup = settings.startup_health_check_timeout_seconds
        if settings.mode is Mode.SERVERLESS:
            serverless = settings.serverless
            return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=settings.variant_name,
                model_name=model_name,
                initial_variant_weight=1.0,
                serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=serverless.memory,
                    max_concurrency=serverless.concurrency,
                    provisioned_concurrency=serverless.provisioned_concurrency,
                ),
            )
        managed = None
        routing = None
        if settings.mode is Mode.INFERENCE_COMPONENTS:
            ic = settings.inference_components
            startup = None  # per component (StartupParameters)
            managed = sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                status="ENABLED",
                min_instance_count=(
                    ic.min_instances
                    if ic.min_instances is not None
                    else settings.scaling.min_instances
                ),
                max_instance_count=(
                    ic.max_instances
                    if ic.max_instances is not None
                    else settings.scaling.max_instances
                ),
            )
            routing = sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                routing_strategy="LEAST_OUTSTANDING_REQUESTS"
            )
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=settings.variant_name,
            model_name=model_name,
            instance_type=settings.instance_type,
            initial_instance_count=settings.initial_instance_count,
            initial_variant_weight=1.0,
            container_startup_health_check_timeout_in_seconds=startup,
            managed_instance_scaling=managed,
            routing_config=routing,
        )

    def _inference_components(self, image: EcrImage) -> None:
        """One component per archive key, each a single-model container with its archive."""
        settings = self.settings
        ic = settings.inference_components
        instance = settings.instance
        assert instance is not None
        gpu = instance.hardware is Hardware.GPU
        accelerators = (ic.accelerators or 1) if gpu else None
        environment = dict(settings.environment)
        environment[container_env.METRICS_NAMESPACE] = settings.metrics_namespace
        startup = settings.startup_health_check_timeout_seconds
        for index, key in enumerate(ic.archives or ()):
            name = component_name(settings.endpoint_name, key)
            component = sagemaker.CfnInferenceComponent(
                self,
                f"Component{index}",
                endpoint_name=settings.endpoint_name,
                inference_component_name=name,
                variant_name=settings.variant_name,
                specification=_IC.InferenceComponentSpecificationProperty(
                    container=_IC.InferenceComponentContainerSpecificationProperty(
                        image=image.uri,
                        artifact_url=f"{self.model_files.prefix.url}{key}",
                        environment=environment,
                    ),
                    compute_resource_requirements=_IC.InferenceComponentComputeResourceRequirementsProperty(
                        number_of_cpu_cores_required=ic.cores,
                        min_memory_required_in_mb=ic.memory,
                        number_of_accelerator_devices_required=accelerators,
                    ),
                    startup_parameters=None
                    if startup is None
                    else _IC.InferenceComponentStartupParametersProperty(
                        container_startup_health_check_timeout_in_seconds=startup
                    ),
                ),
                runtime_config=_IC.InferenceComponentRuntimeConfigProperty(
                    copy_count=ic.copy_count
                ),
            )
            component.node.add_dependency(self.endpoint)
            if self.model_files.deployment is not None:
                component.node.add_dependency(self.model_files.deployment)
            self.components.append(component)
            if settings.scaling.enabled:
                target, _ = component_scaling(self, f"Component{index}", settings, name)
                target.node.add_dependency(component)

    def _async_statements(self) -> list[iam.PolicyStatement]:
        """Read the inputs, write answers and failures, publish the notifications."""
        config = self.settings.asynchronous
        assert config.output_path is not None  # checked in settings
        output = parse_s3_prefix(config.output_path, key="async_output_path")
        if config.input_path is not None:
            self.async_input_prefix = parse_s3_prefix(config.input_path, key="async_input_path")
        else:
            self.async_input_prefix = S3Prefix(output.bucket, config.DEFAULT_INPUT_KEY_PREFIX)
        source = self.async_input_prefix
        statements = [
            s3_prefix_statement(
                "ReadAsyncInput", ["s3:GetObject"], source.bucket, source.key_prefix
            ),
            s3_prefix_statement(
                "WriteAsyncOutput", ["s3:PutObject"], output.bucket, output.key_prefix
            ),
        ]
        if config.failure_path is not None:
            failure = parse_s3_prefix(config.failure_path, key="async_failure_path")
            statements.append(
                s3_prefix_statement(
                    "WriteAsyncFailure", ["s3:PutObject"], failure.bucket, failure.key_prefix
                )
            )
        topics = sorted({t for t in (config.success_topic_arn, config.error_topic_arn) if t})
        if topics:
            statements.append(
                iam.PolicyStatement(
                    sid="PublishAsyncNotifications", actions=["sns:Publish"], resources=topics
                )
            )
        return statements

    def _async_config(self) -> sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty | None:
        config = self.settings.asynchronous
        if self.settings.mode is not Mode.ASYNC:
            return None
        notification = None
        if config.success_topic_arn or config.error_topic_arn:
            include = [
                topic_kind
                for topic_kind, arn in (
                    ("SUCCESS_NOTIFICATION_TOPIC", config.success_topic_arn),
                    ("ERROR_NOTIFICATION_TOPIC", config.error_topic_arn),
                )
                if arn and config.include_response
            ]
            notification = sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                success_topic=config.success_topic_arn,
                error_topic=config.error_topic_arn,
                include_inference_response_in=include or None,
            )
        client = None
        if config.max_concurrent_invocations is not None:
            client = sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                max_concurrent_invocations_per_instance=config.max_concurrent_invocations
            )
        return sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
            output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                s3_output_path=_url(config.output_path, "async_output_path"),
                s3_failure_path=_url(config.failure_path, "async_failure_path"),
                notification_config=notification,
            ),
            client_config=client,
        )

    def _transform_statements(self) -> list[iam.PolicyStatement]:
        """What a transform job on the stack's model needs: read the input, write the output."""
        transform = self.settings.transform
        assert transform.input_path is not None and transform.output_path is not None
        source = parse_s3_prefix(transform.input_path, key="transform_input_path")
        target = parse_s3_prefix(transform.output_path, key="transform_output_path")
        return [
            s3_prefix_statement(
                "ReadTransformInput", ["s3:GetObject"], source.bucket, source.key_prefix
            ),
            iam.PolicyStatement(
                sid="ListTransformInput",
                actions=["s3:ListBucket"],
                resources=[f"arn:{Aws.PARTITION}:s3:::{source.bucket}"],
                conditions={"StringLike": {"s3:prefix": [f"{source.key_prefix}*"]}},
            ),
            s3_prefix_statement(
                "WriteTransformOutput",
                ["s3:PutObject", "s3:AbortMultipartUpload"],
                target.bucket,
                target.key_prefix,
            ),
        ]

    def _data_capture_prefix(self) -> S3Prefix:
        """Where captured requests go: the given prefix, or a new private bucket's."""
        given = self.settings.data_capture.destination
        if given is not None:
            return parse_s3_prefix(given, key="data_capture_s3_uri")
        bucket = private_bucket(self, "DataCaptureBucket")
        return S3Prefix(bucket=bucket.bucket_name, key_prefix=DATA_CAPTURE_KEY_PREFIX)

    def _data_capture_statements(self, prefix: S3Prefix) -> list[iam.PolicyStatement]:
        capture = self.settings.data_capture
        statements = [
            s3_prefix_statement(
                "WriteDataCapture", ["s3:PutObject"], prefix.bucket, prefix.key_prefix
            )
        ]
        if capture.kms_key_arn is not None:
            statements.append(
                iam.PolicyStatement(
                    sid="EncryptDataCapture",
                    actions=["kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[capture.kms_key_arn],
                )
            )
        return statements

    def _data_capture_config(self) -> sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None:
        capture = self.settings.data_capture
        if self.data_capture_prefix is None or capture.percent is None:
            return None
        json_types, csv_types = capture.json_types, capture.csv_types
        header = None
        if json_types or csv_types:
            header = sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                json_content_types=list(json_types) or None,
                csv_content_types=list(csv_types) or None,
            )
        return sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
            enable_capture=True,
            initial_sampling_percentage=capture.percent,
            destination_s3_uri=self.data_capture_prefix.url,
            capture_options=[
                sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode=mode)
                for mode in capture.capture_modes
            ],
            capture_content_type_header=header,
            kms_key_id=capture.kms_key_arn,
        )

    def _container(self, image: EcrImage) -> sagemaker.CfnModel.ContainerDefinitionProperty:
        settings = self.settings
        prefix_url = self.model_files.prefix.url
        environment = dict(settings.environment)
        # the container's EMF namespace: the one the role may write to and the alarms watch
        environment[container_env.METRICS_NAMESPACE] = settings.metrics_namespace
        if settings.mode is Mode.CPU_MULTI_MODEL:
            # SageMaker itself sets SAGEMAKER_MULTI_MODEL=true for Mode: MultiModel
            return sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image.uri,
                mode="MultiModel",
                model_data_url=prefix_url,
                environment=environment,
            )
        cache = settings.cache
        environment[container_env.MODEL_PREFIX] = prefix_url
        default_model = cache.default_model or self.model_files.asset_model_name
        if default_model is not None:
            environment[container_env.DEFAULT_MODEL] = default_model
        if cache.max_models is not None:
            environment[container_env.CACHE_MAX_MODELS] = str(cache.max_models)
        if cache.gpu_memory_fraction is not None:
            environment[container_env.CACHE_GPU_MEMORY_FRACTION] = f"{cache.gpu_memory_fraction:g}"
        return sagemaker.CfnModel.ContainerDefinitionProperty(
            image=image.uri,
            mode="SingleModel",
            environment=environment,
        )

    def _container_metrics_config(self) -> dict[str, Any] | None:
        """The container's ``ContainerMetricsConfig`` (CloudFormation names), if asked for."""
        metrics = self.settings.container_metrics
        if not metrics.enabled:
            return None
        endpoint: dict[str, Any] = {"MetricsEndpointPath": metrics.path}
        if metrics.publish_frequency_seconds is not None:
            endpoint["MetricPublishFrequencyInSeconds"] = metrics.publish_frequency_seconds
        return {"MetricsEndpoints": [endpoint]}

    def _metrics_config(self) -> sagemaker.CfnEndpointConfig.MetricsConfigProperty | None:
        """The endpoint config's ``MetricsConfig``; None leaves SageMaker's defaults."""
        metrics = self.settings.container_metrics
        detailed = metrics.detailed_observability
        if metrics.enabled and detailed is None:
            detailed = True  # scraping the container is detailed observability
        if detailed is None and metrics.publish_frequency_seconds is None:
            return None
        return sagemaker.CfnEndpointConfig.MetricsConfigProperty(
            enable_detailed_observability=detailed,
            metric_publish_frequency_in_seconds=metrics.publish_frequency_seconds,
        )

    def _deployment_config(self) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
        deployment = self.settings.deployment
        step = sagemaker.CfnEndpoint.CapacitySizeProperty(
            type="CAPACITY_PERCENT", value=deployment.traffic_step_percent
        )
        routing = sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
            type=deployment.traffic_routing,
            wait_interval_in_seconds=deployment.bake_seconds,
            canary_size=step if deployment.traffic_routing == "CANARY" else None,
            linear_step_size=step if deployment.traffic_routing == "LINEAR" else None,
        )
        return sagemaker.CfnEndpoint.DeploymentConfigProperty(
            blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                traffic_routing_configuration=routing,
                termination_wait_in_seconds=deployment.termination_wait_seconds,
                maximum_execution_timeout_in_seconds=deployment.max_execution_seconds,
            ),
            auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                alarms=[
                    sagemaker.CfnEndpoint.AlarmProperty(alarm_name=name)
                    for name in self.alarms.rollback_names
                ]
            ),
        )

    def _check_region(self, image: EcrImage) -> None:
        """SageMaker needs the ECR image in the endpoint's region (CreateModel reference)."""
        if Token.is_unresolved(self.region) or Token.is_unresolved(image.region):
            return
        if self.region != image.region:
            raise ValueError(
                f"the image {image.uri} is in {image.region}, but the stack deploys to "
                f"{self.region}; SageMaker pulls the image from ECR in the endpoint's own "
                "region. Fix: push the image to this region, or deploy the stack there."
            )

    def _warn(self, image: EcrImage) -> None:
        settings = self.settings
        annotations = Annotations.of(self)
        if settings.image_uri is None:
            annotations.add_warning_v2(
                "scorer:default-image",
                "no image_uri or image_detail given: the endpoint runs scorer:latest from the "
                "deploying account's ECR; pass -c image_detail=imageDetail.json from the build",
            )
        elif not image.pinned:
            annotations.add_warning_v2(
                "scorer:moving-tag",
                f"image {image.uri} uses a moving tag: pushing a new build under it changes "
                "nothing in the template, so cdk deploy will not update the endpoint; deploy "
                "the commit tag or digest the build writes to imageDetail.json",
            )
        instance = settings.instance
        if (
            settings.mode is Mode.GPU_SELF_MANAGED
            and instance is not None
            and instance.hardware is Hardware.CPU
        ):
            annotations.add_warning_v2(
                "scorer:self-managed-on-cpu",
                f"mode gpu-self-managed on the CPU instance {instance.name}: the container's "
                "own model cache works, but mode cpu-multi-model lets SageMaker route and "
                "cache models across instances",
            )
        if settings.data_capture.enabled and settings.mode is not Mode.GPU_SELF_MANAGED:
            annotations.add_warning_v2(
                "scorer:data-capture-unconfirmed",
                f"data capture with mode {settings.mode.value}: "
                + (
                    "SageMaker captures a multi-model endpoint's requests, but Model Monitor "
                    "does not monitor multi-model endpoints; the records are for your own jobs"
                    if settings.mode is Mode.CPU_MULTI_MODEL
                    else "the developer guide documents capture for single-model real-time "
                    "endpoints; whether SageMaker accepts it with this mode is not confirmed"
                ),
            )
        if settings.container_metrics.enabled:
            annotations.add_warning_v2(
                "scorer:container-metrics-override",
                "container_metrics_config writes PrimaryContainer.ContainerMetricsConfig with a "
                "property override: SageMaker's API has it, but this CDK version's and "
                "cfn-lint's CloudFormation schemas do not, so CloudFormation may refuse the "
                "model at deploy time (docs/infra.md). Without it SageMaker still scrapes "
                "/metrics on port 8080, the default for a bring-your-own container",
            )
        if instance is not None and instance.arm64:
            annotations.add_warning_v2(
                "scorer:arm64-instance",
                f"{instance.name} is an AWS Graviton (arm64) instance; it runs the image only "
                "if the image was built for linux/arm64",
            )

    def _outputs(self, image: EcrImage) -> None:
        settings = self.settings
        CfnOutput(self, "EndpointName", value=settings.endpoint_name)
        CfnOutput(self, "ImageUri", value=image.uri)
        CfnOutput(self, "ModelDataPrefix", value=self.model_files.prefix.url)
        CfnOutput(self, "ExecutionRoleArn", value=self.role.role_arn)
        if self.data_capture_prefix is not None:
            CfnOutput(self, "DataCaptureUri", value=self.data_capture_prefix.url)
        if self.model is not None and self.model.model_name is not None:
            CfnOutput(
                self,
                "ModelName",
                value=self.model.model_name,
                description="the SageMaker model (CreateTransformJob --model-name)",
            )
        if self.async_input_prefix is not None:
            CfnOutput(
                self,
                "AsyncInputPrefix",
                value=self.async_input_prefix.url,
                description="where InvokeEndpointAsync inputs go (the role may read only here)",
            )
        if self.model_files.asset_model_name is not None:
            CfnOutput(
                self,
                "AssetModelName",
                value=self.model_files.asset_model_name,
                description="the TargetModel / target_model name of the uploaded archive",
            )

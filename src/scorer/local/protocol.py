"""The InvokeEndpoint wire protocol: header names, and reading one request off the wire.

Header names are botocore's ``sagemaker-runtime`` service model's (restJson1): a raw body,
``Content-Type``, ``Accept`` and ``X-Amzn-SageMaker-*`` request headers; the response's
``Content-Type``, ``x-Amzn-Invoked-Production-Variant``, ``X-Amzn-SageMaker-Custom-Attributes``
and ``x-amzn-RequestId``.
"""

from __future__ import annotations

from starlette.requests import Request

from scorer.frontend.body import read_body
from scorer.local.errors import ServiceError, validation_error
from scorer.local.settings import LOCAL_ACCOUNT, LocalSettings
from scorer.modelserver.client import (
    ACCEPT,
    CONTENT_TYPE,
    CUSTOM_ATTRIBUTES,
    INFERENCE_ID,
    TARGET_MODEL,
    Invocation,
)

TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
INFERENCE_COMPONENT = "X-Amzn-SageMaker-Inference-Component"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"
REQUEST_ID = "x-amzn-RequestId"

MAX_CUSTOM_ATTRIBUTES = 1024
MAX_INFERENCE_ID = 64
MAX_INFERENCE_COMPONENT = 63
COMPONENT_REQUIRED = (  # AWS's message (public SDK users' reports of the error)
    "Inference Component Name header is required for endpoints to which you plan to deploy "
    "inference components. Please include Inference Component Name header or consider "
    "using SageMaker models."
)


def endpoint_not_found(name: str) -> ServiceError:
    """AWS's answer for an endpoint name it does not know."""
    return validation_error(f"Endpoint {name} of account {LOCAL_ACCOUNT} not found.")


def _payload_too_large(limit: int) -> ServiceError:
    return validation_error(
        f"Request body is larger than the InvokeEndpoint limit of {limit} bytes "
        "(use asynchronous inference for larger payloads)."
    )


def _disconnected() -> ServiceError:
    return validation_error("The client closed the connection before the body was read.")


def check_header(name: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise validation_error(f"{name} must be at most {limit} characters long.")
    if not value.isascii():
        raise validation_error(f"{name} must be US-ASCII.")


def _component_model(
    endpoint_name: str, component: str | None, target_model: str | None, settings: LocalSettings
) -> str:
    """The archive an ``InferenceComponentName`` names (the header routes like TargetModel).

    Raises:
        ServiceError: the endpoint hosts no components, the header is missing or names
            no component, or TargetModel is given too.
    """
    if not settings.inference_components:
        raise validation_error(
            f"Endpoint {endpoint_name} does not host inference components: "
            f"InferenceComponentName ({INFERENCE_COMPONENT}) is not supported."
        )
    if not component:
        raise validation_error(COMPONENT_REQUIRED)
    check_header("InferenceComponentName", component, MAX_INFERENCE_COMPONENT)
    if target_model:
        raise validation_error(
            f"Endpoint {endpoint_name} hosts inference components: TargetModel is not supported."
        )
    key = settings.inference_components.get(component)
    if key is None:
        raise validation_error(
            f"Inference component {component} of account {LOCAL_ACCOUNT} not found "
            f"on endpoint {endpoint_name}."
        )
    return key


async def read_invocation(
    request: Request, endpoint_name: str, settings: LocalSettings
) -> Invocation:
    """Check the endpoint and the headers, then read the body (at most the payload limit).

    Raises:
        ServiceError: a ``ValidationError`` naming what is wrong.
    """
    if endpoint_name != settings.endpoint_name:
        raise endpoint_not_found(endpoint_name)
    headers = request.headers
    target_model = headers.get(TARGET_MODEL)
    component = headers.get(INFERENCE_COMPONENT)
    if settings.inference_components or component:
        target_model = _component_model(endpoint_name, component, target_model, settings)
    elif settings.multi_model and not target_model:
        raise validation_error(
            f"Endpoint {endpoint_name} is a multi-model endpoint: set TargetModel "
            f"({TARGET_MODEL}) to the archive to invoke, relative to {settings.cache.model_prefix}."
        )
    if not settings.multi_model and target_model:
        raise validation_error(
            f"Endpoint {endpoint_name} is a single-model endpoint: TargetModel is not supported."
        )
    variant = headers.get(TARGET_VARIANT)
    if variant and variant != settings.variant_name:
        raise validation_error(
            f"Variant {variant} not found on endpoint {endpoint_name} "
            f"(its only variant is {settings.variant_name})."
        )
    custom_attributes = headers.get(CUSTOM_ATTRIBUTES)
    check_header("CustomAttributes", custom_attributes, MAX_CUSTOM_ATTRIBUTES)
    inference_id = headers.get(INFERENCE_ID)
    check_header("InferenceId", inference_id, MAX_INFERENCE_ID)
    body = await read_body(request, settings.payload_limit, _payload_too_large, _disconnected)
    return Invocation(
        body=body,
        content_type=headers.get(CONTENT_TYPE),
        accept=headers.get(ACCEPT),
        custom_attributes=custom_attributes,
        target_model=target_model,
        inference_id=inference_id,
    )

"""The InvokeEndpoint wire protocol: header names, and reading one request off the wire.

Header names are botocore's ``sagemaker-runtime`` service model's (restJson1): a raw body,
``Content-Type``, ``Accept`` and ``X-Amzn-SageMaker-*`` request headers; the response's
``Content-Type``, ``x-Amzn-Invoked-Production-Variant``, ``X-Amzn-SageMaker-Custom-Attributes``
and ``x-amzn-RequestId``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from scorer.local.errors import ServiceError, validation_error
from scorer.local.settings import LOCAL_ACCOUNT, LocalSettings

CONTENT_TYPE = "Content-Type"
ACCEPT = "Accept"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"
REQUEST_ID = "x-amzn-RequestId"

MAX_CUSTOM_ATTRIBUTES = 1024
MAX_INFERENCE_ID = 64


@dataclass(frozen=True)
class Invocation:
    """One InvokeEndpoint request, checked as SageMaker Runtime checks it."""

    endpoint_name: str
    body: bytes
    content_type: str | None
    accept: str | None
    target_model: str | None
    custom_attributes: str | None
    inference_id: str | None

    def forward_headers(self) -> dict[str, str]:
        """The headers the model server gets (SageMaker's multi-model contract)."""
        headers = {
            CONTENT_TYPE: self.content_type,
            ACCEPT: self.accept,
            CUSTOM_ATTRIBUTES: self.custom_attributes,
            TARGET_MODEL: self.target_model,
        }
        return {name: value for name, value in headers.items() if value}


def endpoint_not_found(name: str) -> ServiceError:
    """AWS's answer for an endpoint name it does not know."""
    return validation_error(f"Endpoint {name} of account {LOCAL_ACCOUNT} not found.")


def _payload_too_large(limit: int) -> ServiceError:
    return validation_error(
        f"Request body is larger than the InvokeEndpoint limit of {limit} bytes "
        "(use asynchronous inference for larger payloads)."
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _payload_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _payload_too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise validation_error(
            "The client closed the connection before the body was read."
        ) from None
    return b"".join(chunks)


def _check_header(name: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise validation_error(f"{name} must be at most {limit} characters long.")
    if not value.isascii():
        raise validation_error(f"{name} must be US-ASCII.")


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
    if settings.multi_model and not target_model:
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
    _check_header("CustomAttributes", custom_attributes, MAX_CUSTOM_ATTRIBUTES)
    inference_id = headers.get(INFERENCE_ID)
    _check_header("InferenceId", inference_id, MAX_INFERENCE_ID)
    body = await _read_body(request, settings.max_payload_bytes)
    return Invocation(
        endpoint_name=endpoint_name,
        body=body,
        content_type=headers.get(CONTENT_TYPE),
        accept=headers.get(ACCEPT),
        target_model=target_model,
        custom_attributes=custom_attributes,
        inference_id=inference_id,
    )

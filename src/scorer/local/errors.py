"""SageMaker Runtime error shapes, so the AWS SDKs raise the same exceptions as in AWS.

An error response carries the error code in the ``x-amzn-ErrorType`` header (boto3's
``RestJSONParser`` and the JavaScript SDK v3 read it first) and a JSON body with
``message``/``Message`` plus the modeled fields of its shape (botocore's
``sagemaker-runtime`` service model):

============================  ====  =======================================================
code                          HTTP  when
============================  ====  =======================================================
ValidationError               400   bad request: endpoint, target model, payload, headers
ModelError                    424   the model answered 4xx/5xx, or failed to load
ModelNotReadyException        429   the target model is still loading after the wait budget
ThrottlingException           429   serverless: MaxConcurrency invocations already in flight
InternalFailure               500   a fault in the emulator itself (details only in its log)
ServiceUnavailable            503   the model server cannot be reached
InternalDependencyException   530   the model source (S3) failed
============================  ====  =======================================================

Scorer's own errors map to these once, through :func:`service_error_for` (by class, most
specific first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from scorer.cache.errors import InvalidModelKeyError, ModelNotReadyError, ModelSourceError
from scorer.errors import (
    InsufficientMemoryError,
    ModelLoadFailedError,
    ModelNotFoundError,
    ModelServerUnavailableError,
    PayloadTooLargeError,
    ScorerError,
)
from scorer.models.archive import ArchiveError

VALIDATION_ERROR = "ValidationError"
MODEL_ERROR = "ModelError"
MODEL_NOT_READY = "ModelNotReadyException"
THROTTLING = "ThrottlingException"
INTERNAL_FAILURE = "InternalFailure"
SERVICE_UNAVAILABLE = "ServiceUnavailable"
INTERNAL_DEPENDENCY = "InternalDependencyException"

STATUS = {
    VALIDATION_ERROR: 400,
    MODEL_ERROR: 424,
    MODEL_NOT_READY: 429,
    THROTTLING: 429,
    INTERNAL_FAILURE: 500,
    SERVICE_UNAVAILABLE: 503,
    INTERNAL_DEPENDENCY: 530,
}

ERROR_TYPE_HEADER = "x-amzn-ErrorType"


class ServiceError(Exception):
    """An error SageMaker Runtime would answer: code, HTTP status, message, modeled fields."""

    def __init__(self, code: str, message: str, fields: Mapping[str, object] | None = None):
        super().__init__(message)
        self.code = code
        self.status_code = STATUS[code]
        self.message = message
        self.fields = dict(fields or {})

    def body(self) -> bytes:
        """The JSON body: ``message`` and ``Message`` plus the shape's fields."""
        return json.dumps(
            {"message": self.message, "Message": self.message, **self.fields}
        ).encode()


def validation_error(message: str) -> ServiceError:
    """A ``ValidationError`` (400)."""
    return ServiceError(VALIDATION_ERROR, message)


def model_error(
    status: int, original_message: str, *, log_stream_arn: str, log_hint: str
) -> ServiceError:
    """A ``ModelError`` (424) for a model that answered ``status`` with ``original_message``.

    The message reads like SageMaker's ("Received client error (400) from primary with
    message ..."), pointing to the model server's log instead of CloudWatch.
    """
    kind = "client" if 400 <= status < 500 else "server"
    where = f"the model server's log ({log_hint})" if log_hint else "the model server's log"
    message = (
        f'Received {kind} error ({status}) from model with message "{original_message}". '
        f"See {where} for more information."
    )
    fields: dict[str, object] = {
        "OriginalStatusCode": status,
        "OriginalMessage": original_message,
        "LogStreamArn": log_stream_arn,
    }
    if kind == "client":
        fields["ErrorCode"] = "CLIENT_ERROR_FROM_MODEL"
    return ServiceError(MODEL_ERROR, message, fields)


_BY_CLASS: tuple[tuple[type[ScorerError], str], ...] = (
    (InvalidModelKeyError, VALIDATION_ERROR),
    (ModelNotFoundError, VALIDATION_ERROR),
    (ArchiveError, VALIDATION_ERROR),
    (PayloadTooLargeError, VALIDATION_ERROR),
    (ModelNotReadyError, MODEL_NOT_READY),
    (ModelLoadFailedError, MODEL_ERROR),
    (InsufficientMemoryError, MODEL_ERROR),
    (ModelSourceError, INTERNAL_DEPENDENCY),
    (ModelServerUnavailableError, SERVICE_UNAVAILABLE),
)


def service_error_for(
    error: ScorerError, *, log_stream_arn: str, log_hint: str = ""
) -> ServiceError:
    """The SageMaker Runtime error for one of scorer's errors.

    A model that fails to load (500) or runs out of memory (507) is a ``ModelError`` with
    that ``OriginalStatusCode``; other scorer errors map by class (see the module table),
    and unknown ones by status: 4xx -> ``ValidationError``, else ``InternalFailure``.
    """
    for cls in type(error).__mro__:
        code = next((code for known, code in _BY_CLASS if known is cls), None)
        if code is not None:
            break
    else:
        code = VALIDATION_ERROR if 400 <= int(error.status_code) < 500 else INTERNAL_FAILURE
    if code == MODEL_ERROR:
        return model_error(
            int(error.status_code), error.message, log_stream_arn=log_stream_arn, log_hint=log_hint
        )
    if code == INTERNAL_FAILURE:
        return internal_failure()
    return ServiceError(code, error.message)


def internal_failure(request_id: str = "") -> ServiceError:
    """An ``InternalFailure`` (500) that says nothing about the cause (it is in the log)."""
    suffix = f" (request id {request_id})" if request_id else ""
    return ServiceError(
        INTERNAL_FAILURE,
        f"An internal error occurred in the local SageMaker Runtime emulator{suffix}; "
        "see its log for details.",
    )

"""One error hierarchy for scorer; each edge (MMS, the emulator, the CLI) maps it once.

Every error a client can cause is a :class:`ScorerError` with a 4xx status and a message
safe to return. Anything else that escapes the chain is a server fault (500) whose
details are logged, never sent to the client.
"""

from __future__ import annotations

from http import HTTPStatus


class ScorerError(Exception):
    """Base class: an error with an HTTP status code and a client-safe message."""

    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    @property
    def error_type(self) -> str:
        """A short machine-readable name for the error (the class name)."""
        return type(self).__name__

    def to_dict(self) -> dict[str, object]:
        """The JSON body sent to clients."""
        return {"code": self.status_code, "type": self.error_type, "message": self.message}


class ConfigError(ScorerError):
    """The server's environment is set to a value that cannot be used."""


class BadRequestError(ScorerError):
    """The request body cannot be decoded (corrupt image, malformed JSON, wrong shape)."""

    status_code = HTTPStatus.BAD_REQUEST


class UnsupportedContentTypeError(ScorerError):
    """No decoder for the request's Content-Type."""

    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class UnsupportedAcceptError(ScorerError):
    """No encoder for the request's Accept."""

    status_code = HTTPStatus.NOT_ACCEPTABLE


class PayloadTooLargeError(ScorerError):
    """The request (or an image in it) is larger than the configured limit."""

    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class ModelNotFoundError(ScorerError):
    """The named model is not loaded or does not exist."""

    status_code = HTTPStatus.NOT_FOUND


class ModelLoadError(ScorerError):
    """A model archive or directory cannot be loaded (bad spec, weights, user code)."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class UnsafeModelError(ModelLoadError):
    """The model needs something the operator has not allowed (e.g. unpickling objects)."""

    status_code = HTTPStatus.BAD_REQUEST


class InsufficientMemoryError(ScorerError):
    """Host or device memory ran out; SageMaker's multi-model contract answers 507."""

    status_code = HTTPStatus.INSUFFICIENT_STORAGE


class UserCodeError(ScorerError):
    """A user's ``code/inference.py`` cannot be imported or its hooks are inconsistent."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class RequestTimeoutError(ScorerError):
    """The model did not answer within ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds."""

    status_code = HTTPStatus.GATEWAY_TIMEOUT


class DeadlineExceededError(RequestTimeoutError):
    """A bounded call (a request or a load in the worker) ran past its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:g} s")
        self.seconds = seconds


class ModelLoadFailedError(ModelLoadError):
    """The model server could not load the model (its ``model_fn`` or worker failed)."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class ModelAlreadyRegisteredError(ScorerError):
    """The model server already holds a model of that name (a stale registration)."""

    status_code = HTTPStatus.CONFLICT


class ModelServerUnavailableError(ScorerError):
    """The model server cannot be reached."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE


class ModelServerTimeoutError(ScorerError):
    """The model server did not answer an invocation in time."""

    status_code = HTTPStatus.GATEWAY_TIMEOUT


class ModelServerError(ScorerError):
    """The model server answered a management call with an unexpected failure."""

    status_code = HTTPStatus.BAD_GATEWAY


class ModelServerStartError(ScorerError):
    """The model server exited or did not become ready (single model: the model failed)."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE


class InvalidLoadRequestError(ModelLoadError):
    """A multi-model load the caller got wrong: a url outside ``SCORER_MODELS_ROOT`` or an
    unsafe model name. Retrying it never helps, so it is a 400, not a server fault."""

    status_code = HTTPStatus.BAD_REQUEST

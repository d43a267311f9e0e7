"""Errors the model cache raises, each a :class:`~scorer.errors.ScorerError` with a status.

The cache also raises errors defined elsewhere, unchanged: :class:`ModelNotFoundError`
(404: the key names no archive under the prefix), :class:`~scorer.models.archive.ArchiveError`
(400: a corrupt or unsafe archive) and :class:`InsufficientMemoryError` (507: the model
server ran out of memory, even after an eviction).
"""

from __future__ import annotations

from http import HTTPStatus

from scorer.errors import ModelLoadError, ScorerError


class InvalidModelKeyError(ScorerError):
    """The model key (SageMaker's TargetModel) is not a safe relative name under the prefix."""

    status_code = HTTPStatus.BAD_REQUEST


class ModelNotReadyError(ScorerError):
    """The model is still loading after the wait budget; the load goes on in the background.

    429, as SageMaker Runtime's ``ModelNotReadyException``: the client should retry.
    """

    status_code = HTTPStatus.TOO_MANY_REQUESTS


class ModelLoadFailedError(ModelLoadError):
    """The model server could not load the model (its ``model_fn`` or worker failed)."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class ModelAlreadyRegisteredError(ScorerError):
    """The model server already holds a model of that name (a stale registration)."""

    status_code = HTTPStatus.CONFLICT


class ModelSourceError(ScorerError):
    """The model source (a directory or S3) failed for a reason other than a missing key."""

    status_code = HTTPStatus.BAD_GATEWAY


class ModelServerUnavailableError(ScorerError):
    """The model server cannot be reached."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE

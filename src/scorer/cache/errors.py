"""Errors the model cache raises, each a :class:`~scorer.errors.ScorerError` with a status.

The cache also raises errors defined elsewhere, unchanged: :class:`ModelNotFoundError`
(404: the key names no archive under the prefix), :class:`~scorer.models.archive.ArchiveError`
(400: a corrupt or unsafe archive) and the model registry's errors
(:class:`ModelLoadFailedError`, :class:`ModelAlreadyRegisteredError`,
:class:`ModelServerUnavailableError`, and :class:`InsufficientMemoryError` when the model
server ran out of memory even after an eviction), all from :mod:`scorer.errors`.
"""

from __future__ import annotations

from http import HTTPStatus

from scorer.errors import ScorerError


class InvalidModelKeyError(ScorerError):
    """The model key (SageMaker's TargetModel) is not a safe relative name under the prefix."""

    status_code = HTTPStatus.BAD_REQUEST


class ModelNotReadyError(ScorerError):
    """The model is still loading after the wait budget; the load goes on in the background.

    429, as SageMaker Runtime's ``ModelNotReadyException``: the client should retry.
    """

    status_code = HTTPStatus.TOO_MANY_REQUESTS


class ModelSourceError(ScorerError):
    """The model source (a directory or S3) failed for a reason other than a missing key."""

    status_code = HTTPStatus.BAD_GATEWAY

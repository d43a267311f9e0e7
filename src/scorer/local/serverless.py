"""Serverless inference limits in the local emulator (``--serverless-memory-mb``,
``--serverless-max-concurrency``).

What SageMaker documents for a serverless endpoint (``PLATFORM.md`` section 7 part 3,
from botocore's ``ServerlessConfig`` and the developer guide): ``MemorySizeInMB`` 1024-6144
in steps of 1024, ``MaxConcurrency`` 1-200, request and response bodies of at most 4 MB,
no GPU, and no multi-model endpoint, data capture or async inference.

The emulator applies them as follows:

* the settings are checked at start (:func:`check_serverless`), with a message naming the
  fix for a combination serverless does not support;
* a request body over :data:`SERVERLESS_PAYLOAD_LIMIT` is a ``ValidationError`` (400),
  like any body over the real-time limit; a response over it is a ``ModelError`` (424);
* an invocation beyond ``MaxConcurrency`` in flight is refused at once with
  ``ThrottlingException`` (429) (:class:`ConcurrencyLimit`); the AWS SDKs retry it;
* the model server it starts gets ``SCORER_DEVICE=cpu`` and a worker memory limit of
  ``MemorySizeInMB`` (:func:`serverless_environment`).

The status of the throttling answer and the exact messages are not documented by AWS;
these are scorer's choices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from scorer.config import DEVICE, WORKER_MEMORY_LIMIT_MB
from scorer.errors import ConfigError
from scorer.local.errors import MODEL_ERROR, THROTTLING, ServiceError

if TYPE_CHECKING:
    from scorer.local.settings import LocalSettings

SERVERLESS_PAYLOAD_LIMIT = 4 * 1024 * 1024
SERVERLESS_MEMORY_SIZES = tuple(range(1024, 6145, 1024))
MAX_CONCURRENCY_RANGE = (1, 200)
DEFAULT_MEMORY_MB = 2048  # the SageMaker Python SDK's ServerlessInferenceConfig defaults
DEFAULT_MAX_CONCURRENCY = 5


def memory_mb(settings: LocalSettings) -> int:
    """The endpoint's ``MemorySizeInMB``."""
    return settings.serverless_memory_mb or DEFAULT_MEMORY_MB


def max_concurrency(settings: LocalSettings) -> int:
    """The endpoint's ``MaxConcurrency``."""
    return settings.serverless_max_concurrency or DEFAULT_MAX_CONCURRENCY


def check_serverless(settings: LocalSettings) -> None:
    """Refuse serverless settings SageMaker would refuse, naming the fix.

    Raises:
        ConfigError: a memory size or concurrency out of range, or an option serverless
            endpoints do not support.
    """
    memory = settings.serverless_memory_mb
    if memory is not None and memory not in SERVERLESS_MEMORY_SIZES:
        sizes = ", ".join(str(size) for size in SERVERLESS_MEMORY_SIZES)
        raise ConfigError(f"--serverless-memory-mb must be one of {sizes}; got {memory}")
    concurrency = settings.serverless_max_concurrency
    low, high = MAX_CONCURRENCY_RANGE
    if concurrency is not None and not low <= concurrency <= high:
        raise ConfigError(
            f"--serverless-max-concurrency must be {low} to {high}; got {concurrency}"
        )
    unsupported = (
        (settings.multi_model, "a multi-model endpoint", "give --model-dir, not --model-prefix"),
        (
            bool(settings.inference_components),
            "inference components",
            "drop --inference-component",
        ),
        (settings.data_capture is not None, "data capture", "drop --data-capture"),
        (
            settings.async_output_path is not None,
            "asynchronous inference",
            "drop --async-output-path",
        ),
    )
    for given, what, fix in unsupported:
        if given:
            raise ConfigError(
                f"serverless endpoints do not support {what} (as in SageMaker): {fix}, "
                "or drop the --serverless-* options"
            )


def serverless_environment(settings: LocalSettings) -> dict[str, str]:
    """What the model server the emulator starts gets on a serverless endpoint: no GPU,
    and the endpoint's memory as the worker's limit."""
    return {DEVICE: "cpu", WORKER_MEMORY_LIMIT_MB: str(memory_mb(settings))}


def throttled(limit: int) -> ServiceError:
    """``ThrottlingException``: ``MaxConcurrency`` invocations are already in flight."""
    return ServiceError(
        THROTTLING,
        f"Rate exceeded: the serverless endpoint's MaxConcurrency of {limit} invocations "
        "are in flight; retry later or raise --serverless-max-concurrency.",
    )


def response_too_large(size: int) -> ServiceError:
    """``ModelError``: the model's answer is larger than serverless allows."""
    message = (
        f"The model's response of {size} bytes is larger than the serverless limit of "
        f"{SERVERLESS_PAYLOAD_LIMIT} bytes."
    )
    return ServiceError(MODEL_ERROR, message, {"OriginalStatusCode": 200})


class ConcurrencyLimit:
    """At most ``limit`` invocations in flight; one more is refused, not queued.

    Used from the event loop only (no lock needed).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while the block runs.

        Raises:
            ServiceError: ``ThrottlingException`` when all slots are taken.
        """
        if self.in_flight >= self.limit:
            raise throttled(self.limit)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

"""InvokeEndpointAsync in the local emulator: accept, queue, invoke, write the result to S3.

``POST /endpoints/{EndpointName}/async-invocations`` (botocore's ``sagemaker-runtime``
model; ``PLATFORM.md`` section 7 part 1): every input is a header (``X-Amzn-SageMaker-*``:
``Content-Type``, ``Accept``, ``Custom-Attributes``, ``Inference-Id``, ``InputLocation``,
``RequestTTLSeconds``, ``InvocationTimeoutSeconds``, ``S3OutputPathExtension``,
``Filename``) except an optional inline body (at most 128,000 bytes, instead of
``InputLocation``). The answer is **202** with ``{"InferenceId"}`` in the body and the
``X-Amzn-SageMaker-OutputLocation`` / ``X-Amzn-SageMaker-FailureLocation`` headers.

The work runs in the background, at most ``async_max_concurrency`` at a time, through the
same invocation path as InvokeEndpoint (:class:`scorer.local.app._Invoker`): the input is
read from S3, the model's answer is written to ``<S3OutputPath>[<extension>/]<id>.out``
(or the ``Filename``) with the model's content type; an error (the model's 4xx/5xx body,
an input that cannot be read, a timeout, an expired request) to
``<S3FailurePath>[<extension>/]<id>-error.out``. S3 is reached through boto3's standard
configuration (``AWS_ENDPOINT_URL_S3``, credentials, region).

When the endpoint has a ``SuccessTopic``/``ErrorTopic`` (``--async-success-topic``,
``--async-error-topic``), each finished request publishes SageMaker's ``InferenceResult``
message to it (:mod:`scorer.local.notifications`). A request that waited in the queue
longer than its ``RequestTTLSeconds`` is not run; one that runs longer than its
``InvocationTimeoutSeconds`` is abandoned; both go to the failure location.

What is not emulated: ``IncludeInferenceResponseIn``, KMS, ``https://`` input locations,
and the platform's backlog metrics. AWS refuses async calls on multi-model endpoints; so
does this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from scorer.errors import ScorerError
from scorer.frontend.body import read_body
from scorer.local.errors import (
    ERROR_TYPE_HEADER,
    ServiceError,
    internal_failure,
    validation_error,
)
from scorer.local.notifications import Notifier, Outcome
from scorer.local.protocol import (
    MAX_CUSTOM_ATTRIBUTES,
    MAX_INFERENCE_ID,
    REQUEST_ID,
    check_header,
    endpoint_not_found,
)
from scorer.local.settings import LocalSettings
from scorer.modelserver.client import CONTENT_TYPE, Invocation

logger = logging.getLogger("scorer.local.async")

ASYNC_CONTENT_TYPE = "X-Amzn-SageMaker-Content-Type"
ASYNC_ACCEPT = "X-Amzn-SageMaker-Accept"
ASYNC_CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
ASYNC_INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
REQUEST_TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
INVOCATION_TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
OUTPUT_PATH_EXTENSION = "X-Amzn-SageMaker-S3OutputPathExtension"
FILENAME = "X-Amzn-SageMaker-Filename"
OUTPUT_LOCATION = "X-Amzn-SageMaker-OutputLocation"
FAILURE_LOCATION = "X-Amzn-SageMaker-FailureLocation"

MAX_INLINE_BODY = 128_000
ASYNC_INVOKE_TIMEOUT_SECONDS = 3600.0 + 30  # InvocationTimeoutSeconds' maximum, a margin
MAX_BACKLOG = 1000  # accepted requests not yet finished; beyond it, ServiceUnavailable
_INPUT_LOCATION = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
_INFERENCE_ID = re.compile(r"^\S[\x20-\x7e]*$")

Invoke = Callable[[Invocation], Awaitable[httpx.Response]]
"""The emulator's invocation path: an answer, or ServiceError/ScorerError (a model error)."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _join(prefix: str, *parts: str) -> str:
    path = prefix if prefix.endswith("/") else prefix + "/"
    return path + "/".join(part.strip("/") for part in parts if part)


def _int_header(request: Request, name: str, field: str, low: int, high: int, default: int) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(f"{field} must be an integer, got {raw!r}.") from None
    if not low <= value <= high:
        raise validation_error(f"{field} must be between {low} and {high}, got {value}.")
    return value


@dataclass(frozen=True)
class AsyncJob:
    """One accepted InvokeEndpointAsync request."""

    inference_id: str
    input_location: str | None
    body: bytes | None
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    ttl_seconds: int
    timeout_seconds: int
    output_location: str
    failure_location: str
    received: float  # AsyncInference.clock() when accepted
    received_at: float = dataclasses.field(default_factory=time.time)  # wall clock: notices


def _default_s3_client() -> Any:
    import boto3

    return boto3.session.Session().client("s3")


class AsyncInference:
    """The async operation of one emulated endpoint: accepts requests and runs them."""

    def __init__(
        self,
        settings: LocalSettings,
        invoke: Invoke,
        s3_client_factory: Callable[[], Any] = _default_s3_client,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        settings: the endpoint's settings.
        invoke: the emulator's invocation path.
        s3_client_factory: a boto3 S3 client (made on first use).
        notifier: where outcomes are published (default: the settings' topics).
        clock: seconds, for RequestTTLSeconds (tests move it instead of waiting a minute).
        """
        self.settings = settings
        self._invoke = invoke
        self.notifier = notifier or Notifier(
            settings.async_success_topic, settings.async_error_topic
        )
        self.clock = clock
        self._s3_factory = s3_client_factory
        self._s3: Any = None
        self._slots = asyncio.Semaphore(settings.async_max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ the request

    def _check_endpoint(self, endpoint_name: str) -> None:
        settings = self.settings
        if endpoint_name != settings.endpoint_name:
            raise endpoint_not_found(endpoint_name)
        if settings.multi_model:
            raise validation_error(
                f"Endpoint {endpoint_name} is a multi-model endpoint: asynchronous inference "
                "(InvokeEndpointAsync) is not supported on multi-model endpoints."
            )
        if settings.async_output_path is None:
            raise validation_error(
                f"Endpoint {endpoint_name} is not configured for asynchronous inference "
                "(start scorer local with --async-output-path s3://bucket/prefix/)."
            )

    async def _read(self, request: Request) -> AsyncJob:
        self._check_endpoint(request.path_params["endpoint_name"])
        headers = request.headers
        for name, field, limit in (
            (ASYNC_CONTENT_TYPE, "ContentType", 1024),
            (ASYNC_ACCEPT, "Accept", 1024),
            (ASYNC_CUSTOM_ATTRIBUTES, "CustomAttributes", MAX_CUSTOM_ATTRIBUTES),
            (ASYNC_INFERENCE_ID, "InferenceId", MAX_INFERENCE_ID),
            (INPUT_LOCATION, "InputLocation", 1024),
            (OUTPUT_PATH_EXTENSION, "S3OutputPathExtension", 512),
            (FILENAME, "Filename", 32),
        ):
            check_header(field, headers.get(name), limit)
        inference_id = headers.get(ASYNC_INFERENCE_ID) or str(uuid.uuid4())
        if not _INFERENCE_ID.match(inference_id):
            raise validation_error("InferenceId must start with a visible character.")
        extension = headers.get(OUTPUT_PATH_EXTENSION) or ""
        if extension.startswith(("s3:", "https:")):
            raise validation_error("S3OutputPathExtension must not start with s3: or https:.")
        filename = headers.get(FILENAME)
        if filename is not None and (filename.count(".") > 1 or "/" in filename):
            raise validation_error("Filename must have at most one dot and no slash.")
        input_location = headers.get(INPUT_LOCATION)
        body = await read_body(
            request,
            MAX_INLINE_BODY,
            lambda limit: validation_error(f"Body must be at most {limit} bytes."),
            lambda: validation_error("The client closed the connection before the body."),
        )
        if input_location is not None:
            match = _INPUT_LOCATION.match(input_location)
            if match is None:
                raise validation_error(
                    f"InputLocation must be an s3:// or https:// URI, got {input_location!r}."
                )
            if match.group(1) != "s3":
                raise validation_error("scorer local reads InputLocation from s3:// only.")
            if body:
                raise validation_error("Give either InputLocation or Body, not both.")
        elif not body:
            raise validation_error("InputLocation or Body is required.")
        output_path = self.settings.async_output_path
        assert output_path is not None
        failure_path = self.settings.async_failure_path or output_path
        return AsyncJob(
            inference_id=inference_id,
            input_location=input_location,
            body=None if input_location is not None else body,
            content_type=headers.get(ASYNC_CONTENT_TYPE),
            accept=headers.get(ASYNC_ACCEPT),
            custom_attributes=headers.get(ASYNC_CUSTOM_ATTRIBUTES),
            ttl_seconds=_int_header(request, REQUEST_TTL, "RequestTTLSeconds", 60, 21600, 21600),
            timeout_seconds=_int_header(
                request, INVOCATION_TIMEOUT, "InvocationTimeoutSeconds", 1, 3600, 900
            ),
            output_location=_join(output_path, extension, filename or f"{inference_id}.out"),
            failure_location=_join(failure_path, extension, f"{inference_id}-error.out"),
            received=self.clock(),
        )

    async def accept(self, request: Request) -> Response:
        """``POST /endpoints/{EndpointName}/async-invocations``: 202, or an error shape."""
        request_id = str(uuid.uuid4())
        try:
            job = await self._read(request)
            if len(self._tasks) >= MAX_BACKLOG:
                raise ServiceError(
                    "ServiceUnavailable",
                    f"{MAX_BACKLOG} asynchronous requests are waiting; try again later.",
                )
        except ServiceError as error:
            return Response(
                error.body(),
                error.status_code,
                headers={ERROR_TYPE_HEADER: error.code, REQUEST_ID: request_id},
                media_type="application/json",
            )
        task = asyncio.create_task(self._run(job), name=f"async-{job.inference_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info("async inference %s accepted: %s", job.inference_id, job.output_location)
        return Response(
            json.dumps({"InferenceId": job.inference_id}),
            202,
            headers={
                OUTPUT_LOCATION: job.output_location,
                FAILURE_LOCATION: job.failure_location,
                REQUEST_ID: request_id,
            },
            media_type="application/json",
        )

    # ------------------------------------------------------------------ the work

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def _get(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        answer = self._client().get_object(Bucket=bucket, Key=key)
        data: bytes = answer["Body"].read()
        return data

    def _put(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = split_s3_uri(uri)
        self._client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    async def _input(self, job: AsyncJob) -> bytes:
        if job.body is not None:
            return job.body
        assert job.input_location is not None
        try:
            return await asyncio.to_thread(self._get, job.input_location)
        except Exception as exc:  # botocore's ClientError, or no connection at all
            message = f"Failed to download the input from {job.input_location}: {exc}"
            raise _FailedError(message) from None

    async def _result(self, job: AsyncJob) -> tuple[bytes, str]:
        """The model's answer and its content type.

        Raises:
            _FailedError: what goes to the failure location.
        """
        if self.clock() - job.received > job.ttl_seconds:
            raise _FailedError(
                f"The request expired: it waited longer than its RequestTTLSeconds "
                f"({job.ttl_seconds} s) before it could run."
            )
        invocation = Invocation(
            body=await self._input(job),
            content_type=job.content_type,
            accept=job.accept,
            custom_attributes=job.custom_attributes,
            inference_id=job.inference_id,
        )
        try:
            response = await asyncio.wait_for(self._invoke(invocation), job.timeout_seconds)
        except TimeoutError:
            raise _FailedError(
                f"The invocation did not finish within its InvocationTimeoutSeconds "
                f"({job.timeout_seconds} s)."
            ) from None
        except ServiceError as error:
            raise _FailedError(str(error.fields.get("OriginalMessage") or error.message)) from None
        except ScorerError as error:
            raise _FailedError(error.message) from None
        if response.status_code >= 400:
            raise _FailedError(response.content, response.headers.get(CONTENT_TYPE))
        return response.content, response.headers.get(CONTENT_TYPE, "application/octet-stream")

    async def _run(self, job: AsyncJob) -> None:
        async with self._slots:
            try:
                body, content_type = await self._result(job)
            except _FailedError as failed:
                await self._write_failure(job, failed)
                return
            except Exception:
                logger.exception("async inference %s failed", job.inference_id)
                internal = _FailedError(internal_failure(job.inference_id).message)
                await self._write_failure(job, internal)
                return
            try:
                await asyncio.to_thread(self._put, job.output_location, body, content_type)
            except Exception as exc:
                logger.exception("async inference %s: the output cannot be written to %s",
                                 job.inference_id, job.output_location)  # fmt: skip
                await self._notify(job, failure=f"The output cannot be written: {exc}")
                return
            logger.info("async inference %s completed: %s", job.inference_id, job.output_location)
            await self._notify(job, output_content_type=content_type)

    async def _write_failure(self, job: AsyncJob, failed: _FailedError) -> None:
        logger.info("async inference %s failed: %s", job.inference_id, failed.text())
        try:
            await asyncio.to_thread(self._put, job.failure_location, failed.body, failed.type)
        except Exception:
            logger.exception("async inference %s: the failure cannot be written to %s",
                             job.inference_id, job.failure_location)  # fmt: skip
        await self._notify(job, failure=failed.text())

    async def _notify(
        self, job: AsyncJob, output_content_type: str | None = None, failure: str | None = None
    ) -> None:
        outcome = Outcome(
            endpoint_name=self.settings.endpoint_name,
            inference_id=job.inference_id,
            received=job.received_at,
            finished=time.time(),
            content_type=job.content_type,
            accept=job.accept,
            input_location=job.input_location,
            output_location=job.output_location,
            output_content_type=output_content_type,
            failure_location=job.failure_location,
            failure_reason=failure,
        )
        if self.notifier.topic(outcome) is not None:
            await asyncio.to_thread(self.notifier.publish, outcome)

    async def wait_idle(self) -> None:
        """Wait until every accepted request has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop: requests not finished are cancelled (as a stopped endpoint drops them)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._tasks.clear()


class _FailedError(Exception):
    """What goes to the failure location: the model's error answer, or a message."""

    def __init__(self, body: bytes | str, content_type: str | None = None) -> None:
        self.body = body.encode() if isinstance(body, str) else body
        self.type = content_type or ("text/plain" if isinstance(body, str) else "application/json")
        super().__init__(self.text())

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")[:500]

"""Async inference notifications: SageMaker's ``InferenceResult`` message, sent to SNS.

An endpoint's ``AsyncInferenceConfig.OutputConfig.NotificationConfig`` names a
``SuccessTopic`` and an ``ErrorTopic``; when a request finishes, SageMaker publishes one
JSON message to the matching topic (``PLATFORM.md`` section 7 part 1, from the developer
guide's *async-inference-check-predictions*)::

    {"awsRegion", "eventTime", "receivedTime", "invocationStatus": "Completed",
     "requestParameters": {"contentType", "endpointName", "inputLocation"[, "accept"]},
     "responseParameters": {"contentType", "outputLocation"},
     "inferenceId", "eventVersion": "1.0", "eventSource": "aws:sagemaker",
     "eventName": "InferenceResult"}

A failure has ``invocationStatus: "Failed"`` and a ``failureReason`` (third-party code
only; unconfirmed); the emulator puts the failure location in ``responseParameters``
(``failureLocation``, its own choice). SNS is reached through boto3's standard
configuration (``AWS_ENDPOINT_URL_SNS``, credentials); a topic that cannot be reached is
logged, never fails the request (SageMaker counts it as ``NotificationFailures``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("scorer.local.async")

TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
MAX_REASON = 1024


def topic_region(arn: str) -> str:
    """The region of an SNS topic ARN (``arn:aws:sns:<region>:<account>:<name>``)."""
    match = TOPIC_ARN.match(arn)
    if match is None:
        raise ValueError(f"not an SNS topic ARN: {arn!r}")
    return match.group(1)


def _timestamp(epoch: float) -> str:
    """ISO 8601 in UTC with milliseconds, as the platform writes ``eventTime``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Outcome:
    """How one async request ended, for its notification.

    Attributes:
        endpoint_name: the endpoint.
        inference_id: the request's InferenceId.
        received: when it was accepted (``time.time()``).
        finished: when it ended (``time.time()``).
        content_type: the request's ContentType (None: not given).
        accept: the request's Accept (None: not given).
        input_location: the request's InputLocation (None: an inline body).
        output_location: where the answer was written (success).
        output_content_type: the answer's content type (success).
        failure_location: where the error was written (failure).
        failure_reason: why it failed (None: it succeeded).
    """

    endpoint_name: str
    inference_id: str
    received: float
    finished: float
    content_type: str | None = None
    accept: str | None = None
    input_location: str | None = None
    output_location: str | None = None
    output_content_type: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the model's answer was written to the output location."""
        return self.failure_reason is None


def notification(outcome: Outcome, region: str) -> dict[str, Any]:
    """SageMaker's ``InferenceResult`` message for ``outcome``."""
    request: dict[str, str] = {
        "contentType": outcome.content_type or "application/octet-stream",
        "endpointName": outcome.endpoint_name,
    }
    if outcome.input_location is not None:
        request["inputLocation"] = outcome.input_location
    if outcome.accept is not None:
        request["accept"] = outcome.accept
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _timestamp(outcome.finished),
        "receivedTime": _timestamp(outcome.received),
        "invocationStatus": "Completed" if outcome.succeeded else "Failed",
        "requestParameters": request,
    }
    if outcome.succeeded:
        message["responseParameters"] = {
            "contentType": outcome.output_content_type or "application/octet-stream",
            "outputLocation": outcome.output_location,
        }
    else:
        assert outcome.failure_reason is not None
        message["failureReason"] = outcome.failure_reason[:MAX_REASON]
        message["responseParameters"] = {"failureLocation": outcome.failure_location}
    message.update(
        inferenceId=outcome.inference_id,
        eventVersion="1.0",
        eventSource="aws:sagemaker",
        eventName="InferenceResult",
    )
    return message


def _default_sns_client(region: str) -> Any:
    import boto3

    return boto3.session.Session().client("sns", region_name=region)


class Notifier:
    """Publishes each outcome to the success or the error topic (either may be None)."""

    def __init__(
        self,
        success_topic: str | None,
        error_topic: str | None,
        client_factory: Callable[[str], Any] = _default_sns_client,
    ) -> None:
        for arn in (success_topic, error_topic):
            if arn is not None:
                topic_region(arn)  # refused early: ValueError
        self.success_topic = success_topic
        self.error_topic = error_topic
        self._factory = client_factory
        self._clients: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """Whether any topic is configured."""
        return self.success_topic is not None or self.error_topic is not None

    def topic(self, outcome: Outcome) -> str | None:
        """The topic ``outcome`` goes to (None: no topic for it)."""
        return self.success_topic if outcome.succeeded else self.error_topic

    def publish(self, outcome: Outcome) -> dict[str, Any] | None:
        """Publish ``outcome``'s message (blocking: call it off the event loop); the message
        sent, or None when there is no topic for it or SNS refused it (logged)."""
        arn = self.topic(outcome)
        if arn is None:
            return None
        region = topic_region(arn)
        message = notification(outcome, region)
        try:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._factory(region)
            client.publish(TopicArn=arn, Message=json.dumps(message))
        except Exception as exc:  # botocore's ClientError, or no connection at all
            logger.warning(
                "async inference %s: the notification to %s failed: %s",
                outcome.inference_id, arn, exc,
            )  # fmt: skip
            return None
        return message

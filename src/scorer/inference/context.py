"""The per-request context a chain function may ask for.

The AWS toolkit's ``*_fn`` hooks cannot see request headers (aws/sagemaker-inference-toolkit
#110). In scorer a hook that declares a ``context`` parameter receives this object: it
carries ``X-Amzn-SageMaker-Custom-Attributes`` and the other SageMaker headers, and lets the
hook set the response's custom attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
TARGET_MODEL = "x-amzn-sagemaker-target-model"
INFERENCE_ID = "x-amzn-sagemaker-inference-id"
MAX_CUSTOM_ATTRIBUTES = 1024  # botocore: at most 1024 visible US-ASCII characters


def parse_custom_attributes(raw: str | None) -> dict[str, str]:
    """Parse ``k=v;k2=v2`` (or comma separated) custom attributes into a dict.

    Items without ``=`` map to an empty string; keys are stripped; later keys win.
    """
    if not raw:
        return {}
    items: dict[str, str] = {}
    separator = ";" if ";" in raw else ","
    for part in raw.split(separator):
        key, _, value = part.partition("=")
        key = key.strip()
        if key:
            items[key] = value.strip()
    return items


@dataclass
class RequestContext:
    """What a hook may know about the request it is handling, and set on its response."""

    model_name: str
    content_type: str = ""
    accept: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    response_custom_attributes: str | None = None

    @property
    def custom_attributes(self) -> str | None:
        """The raw ``X-Amzn-SageMaker-Custom-Attributes`` request header, if any."""
        return self.headers.get(CUSTOM_ATTRIBUTES)

    @property
    def target_model(self) -> str | None:
        """``X-Amzn-SageMaker-Target-Model`` (multi-model endpoints), for logging."""
        return self.headers.get(TARGET_MODEL)

    @property
    def inference_id(self) -> str | None:
        """``X-Amzn-SageMaker-Inference-Id``, if the caller set one."""
        return self.headers.get(INFERENCE_ID)

    def attribute(self, key: str) -> str | None:
        """One ``key=value`` item of the custom attributes."""
        return parse_custom_attributes(self.custom_attributes).get(key)

"""Content-derived physical names for resources that can only be replaced, never updated.

Every property of ``AWS::SageMaker::Model`` and ``AWS::SageMaker::EndpointConfig`` requires
replacement, and CloudFormation cannot replace a resource that keeps its custom name. So
each gets a name that ends in a digest of all its other properties: a change of image,
environment or instance type yields a new name, CloudFormation creates the new resource,
points the endpoint at it (an in-place ``UpdateEndpoint``) and then deletes the old one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_cdk import Stack

DIGEST_CHARS = 12
MAX_NAME = 63


def content_name(stack: Stack, prefix: str, properties: Any) -> str:
    """Return ``<prefix>-<digest>``, the digest taken over the resolved ``properties``.

    ``properties`` may hold CDK tokens and property structs; they are resolved to their
    CloudFormation form first, so the name is the same on every synth of the same input.
    """
    resolved = stack.resolve(properties)
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_CHARS]
    head = prefix[: MAX_NAME - DIGEST_CHARS - 1]
    return f"{head}-{digest}"

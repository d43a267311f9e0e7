#!/usr/bin/env python3
"""CDK entry point: ``cdk synth`` / ``cdk deploy`` run this file (see cdk.json, docs/infra.md).

Every setting comes from the CDK context (``-c key=value`` or cdk.json); nothing needs AWS
credentials or network access to synthesise.
"""

from __future__ import annotations

import aws_cdk as cdk
from scorer_infra import ScorerEndpointStack, settings_from_context

DEFAULT_STACK_NAME = "ScorerEndpoint"


def build_app(app: cdk.App | None = None) -> cdk.App:
    """Add the scorer endpoint stack, configured from the app's context, to ``app``."""
    app = app or cdk.App()
    settings = settings_from_context(app.node.try_get_context)
    stack_name = app.node.try_get_context("stack_name") or DEFAULT_STACK_NAME
    image = settings.image
    # SageMaker needs the image in the endpoint's region, so a known image pins the region;
    # without one the stack stays environment-agnostic.
    env = None if settings.image_uri is None else cdk.Environment(region=image.region)
    ScorerEndpointStack(
        app,
        stack_name,
        settings=settings,
        env=env,
        description=f"scorer SageMaker endpoint {settings.endpoint_name} ({settings.mode.value})",
    )
    return app


if __name__ == "__main__":
    build_app().synth()

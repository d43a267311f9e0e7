"""CDK v2 app that deploys the scorer image as a SageMaker endpoint (see docs/infra.md)."""

from scorer_infra.settings import EndpointSettings, Mode, settings_from_context
from scorer_infra.stack import ScorerEndpointStack

__all__ = ["EndpointSettings", "Mode", "ScorerEndpointStack", "settings_from_context"]

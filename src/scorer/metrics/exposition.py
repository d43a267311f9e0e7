"""A registry as the exposition format the scraper asks for (``Accept``)."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry


def registry_of(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry holding ``collectors`` (nothing of this process's default one)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The body and its content type: Prometheus text (0.0.4) unless ``accept`` asks for
    OpenMetrics or a later text version."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type

"""The container environment the stack sets, and which names it reserves.

The ``SCORER_*`` names are the image's self-managed multi-model settings (see
docs/gpu-multi-model.md) and the CloudWatch namespace of its EMF metrics (see
docs/observability.md); ``SAGEMAKER_MULTI_MODEL`` is injected by SageMaker itself
for ``Mode: MultiModel``. The stack owns these names: a user-supplied environment may not
set them, so the one context key that controls each stays the only way to change it. The
per-model alarms need the namespace the container writes to, which is why the stack owns
it. The EMF switch and interval stay the user's (``environment``); the stack reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

MODEL_PREFIX = "SCORER_MODEL_PREFIX"
DEFAULT_MODEL = "SCORER_DEFAULT_MODEL"
CACHE_MAX_MODELS = "SCORER_CACHE_MAX_MODELS"
CACHE_GPU_MEMORY_FRACTION = "SCORER_CACHE_GPU_MEMORY_FRACTION"
PLATFORM_MULTI_MODEL = "SAGEMAKER_MULTI_MODEL"
METRICS_NAMESPACE = "SCORER_METRICS_NAMESPACE"
EMF = "SCORER_EMF"
EMF_INTERVAL_SECONDS = "SCORER_EMF_INTERVAL_SECONDS"

#: environment name -> the context key that sets it instead
RESERVED: Mapping[str, str] = {
    MODEL_PREFIX: "model_data_prefix",
    DEFAULT_MODEL: "default_model",
    CACHE_MAX_MODELS: "cache_max_models",
    CACHE_GPU_MEMORY_FRACTION: "cache_gpu_memory_fraction",
    PLATFORM_MULTI_MODEL: "mode",
    METRICS_NAMESPACE: "metrics_namespace",
}

#: SageMaker's limits on a container's Environment map (ContainerDefinition, API reference):
#: each key and value at most 1024 bytes, all of them together at most 32 KB.
MAX_ITEM_BYTES = 1024
MAX_TOTAL_BYTES = 32 * 1024

"""What the container's CloudWatch EMF lines are called, for the per-model alarms.

The container writes its ``/metrics`` figures to stdout as embedded metric format
documents (``src/scorer/metrics/emf.py``, docs/observability.md); CloudWatch Logs turns
them into metrics in the namespace ``SCORER_METRICS_NAMESPACE``. The CDK app does not
depend on the scorer package, so the names the alarms use are repeated here, and
``tests/infra`` checks them against documents that ``emf.py`` itself writes:

* ``Requests`` (from ``scorer_requests_total``, unit Count): one data point per interval
  and label set, the increase. Declared under the dimension sets ``[model, code]`` and
  ``[model]``: ``Sum`` over ``{model}`` is every answered request of the model.
* ``RequestDuration`` (from ``scorer_request_duration_seconds``, Milliseconds): a
  distribution (values and counts) under ``[model]``, so CloudWatch has percentiles.

The ``model`` dimension is the model server's name for the model: on a multi-model
endpoint the opaque name SageMaker registered, in ``gpu-self-managed`` mode the first 32
hex digits of the sha256 of the ``TargetModel`` key (``scorer.cache.keys.model_hash``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

from scorer_infra import container_env

DEFAULT_NAMESPACE = "scorer"
REQUESTS = "Requests"
REQUEST_DURATION = "RequestDuration"
MODEL_DIMENSION = "model"
CODE_DIMENSION = "code"
#: every 5xx status a scorer worker answers (``scorer.errors``); metric math in one alarm
#: may use at most 10 metrics, these and the total
ERROR_CODES = ("500", "502", "503", "504", "507")

#: the names MMS and scorer's workers accept (``SAFE_MODEL_NAME`` in the handler service)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: CloudWatch's namespace characters, as the container checks ``SCORER_METRICS_NAMESPACE``
NAMESPACE = re.compile(r"^[A-Za-z0-9 ._/#:-]{1,255}$")
TARGET_MODEL_MAX = 1024  # the longest TargetModel SageMaker Runtime accepts
TARGET_MODEL_HASH_CHARS = 32
DEFAULT_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 86_400
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def check_target_model(key: str) -> str:
    """``key`` if it is a TargetModel the container would accept (a relative name under the
    model prefix); ``ValueError`` otherwise."""
    if not key or len(key) > TARGET_MODEL_MAX or key != key.strip():
        raise ValueError(f"target model {key!r}: 1-{TARGET_MODEL_MAX} characters, no padding")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key) or "\\" in key:
        raise ValueError(f"target model {key!r} has a control character or a backslash")
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(
            f"target model {key!r} must be relative to the model prefix, without empty, '.' "
            "or '..' components"
        )
    return key


def target_model_dimension(key: str) -> str:
    """The ``model`` dimension the container writes for the TargetModel ``key``."""
    return hashlib.sha256(check_target_model(key).encode("utf-8")).hexdigest()[
        :TARGET_MODEL_HASH_CHARS
    ]


def emf_enabled(environment: Mapping[str, str]) -> bool:
    """Whether the container writes EMF lines with this environment (on by default)."""
    raw = environment.get(container_env.EMF, "").strip().lower()
    if raw in _FALSE:
        return False
    if raw == "" or raw in _TRUE:
        return True
    raise ValueError(f"environment {container_env.EMF} must be true or false, got {raw!r}")


def emf_interval_seconds(environment: Mapping[str, str]) -> int:
    """How often the container writes EMF lines with this environment."""
    raw = environment.get(container_env.EMF_INTERVAL_SECONDS, "").strip()
    if raw == "":
        return DEFAULT_INTERVAL_SECONDS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_INTERVAL_SECONDS:
        raise ValueError(
            f"environment {container_env.EMF_INTERVAL_SECONDS} must be a whole number of "
            f"seconds in [1, {MAX_INTERVAL_SECONDS}], got {raw!r}"
        )
    return int(raw)


def alarm_period_seconds(interval_seconds: int) -> int:
    """The alarm period for data written every ``interval_seconds``: a whole number of
    minutes (standard resolution), at least one interval, so that each period gets data."""
    return 60 * max(1, math.ceil(interval_seconds / 60))

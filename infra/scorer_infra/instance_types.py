"""What kind of hardware a SageMaker ``ml.*`` instance type names.

Only the family prefix matters here: ``g*`` and ``p*`` families carry NVIDIA (or, for
``g4ad``, AMD) GPUs; ``inf*``, ``trn*`` and ``dl*`` carry other accelerators that the
scorer image does not drive; every other family is CPU only. A family whose name ends in
``g`` after its generation digit (``c7g``, ``m6gd``, ``g5g``) is AWS Graviton (arm64).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_INSTANCE_TYPE = re.compile(
    r"^ml\.(?P<letters>[a-z]+)(?P<generation>\d+)(?P<suffix>[a-z-]*)\.[a-z0-9]+$"
)
_GPU_LETTERS = ("g", "p")
_ACCELERATOR_LETTERS = ("inf", "trn", "dl")


class Hardware(enum.Enum):
    """The compute an instance type gives a container."""

    CPU = "cpu"
    GPU = "gpu"
    ACCELERATOR = "accelerator"


@dataclass(frozen=True)
class InstanceType:
    """A parsed ``ml.<family>.<size>`` instance type."""

    name: str
    family: str
    hardware: Hardware
    arm64: bool


def parse_instance_type(name: str) -> InstanceType:
    """Parse and classify a SageMaker hosting instance type such as ``ml.c5.2xlarge``.

    Raises:
        ValueError: the name is not of the form ``ml.<family>.<size>``.
    """
    match = _INSTANCE_TYPE.match(name)
    if match is None:
        raise ValueError(
            f"instance type {name!r} is not a SageMaker hosting instance type; "
            "expected the form ml.<family>.<size>, e.g. ml.c5.2xlarge or ml.g5.xlarge"
        )
    letters = match["letters"]
    if letters.startswith(_ACCELERATOR_LETTERS):
        hardware = Hardware.ACCELERATOR
    elif letters.startswith(_GPU_LETTERS):
        hardware = Hardware.GPU
    else:
        hardware = Hardware.CPU
    family = f"{letters}{match['generation']}{match['suffix']}"
    return InstanceType(
        name=name,
        family=family,
        hardware=hardware,
        arm64=match["suffix"].startswith("g"),
    )

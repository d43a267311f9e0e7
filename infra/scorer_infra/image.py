"""The container image: an Amazon ECR image URI, parsed, or read from a build's imageDetail.json.

SageMaker pulls the image with the execution role, so the role must be allowed to read
exactly this image's repository; its ARN is derived from the URI
(``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG][@sha256:DIGEST]``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws

DEFAULT_REPOSITORY = "scorer"
DEFAULT_TAG = "latest"
MOVING_TAGS = frozenset({"latest"})

_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
    r"\.amazonaws\.com(?P<china>\.cn)?"
    r"/(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class EcrImage:
    """An image in Amazon ECR. Fields may be CDK tokens for the default image."""

    uri: str
    account: str
    region: str
    partition: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def repository_arn(self) -> str:
        """The ARN of the ECR repository the image lives in."""
        return f"arn:{self.partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"

    @property
    def pinned(self) -> bool:
        """Whether the URI names one build (a digest, or a tag other than ``latest``)."""
        return self.digest is not None or (self.tag is not None and self.tag not in MOVING_TAGS)


def parse_ecr_image_uri(uri: str) -> EcrImage:
    """Parse a private Amazon ECR image URI.

    Raises:
        ValueError: the URI is not an ECR image URI (SageMaker hosting pulls from ECR;
            other registries need a VPC and ``ImageConfig``, which this stack does not set).
    """
    match = _ECR_URI.match(uri.strip())
    if match is None:
        raise ValueError(
            f"image URI {uri!r} is not an Amazon ECR image URI; expected "
            "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG (or @sha256:DIGEST), "
            "as the build writes it to imageDetail.json"
        )
    region = match["region"]
    if match["china"]:
        partition = "aws-cn"
    elif region.startswith("us-gov-"):
        partition = "aws-us-gov"
    else:
        partition = "aws"
    if match["tag"] is None and match["digest"] is None:
        tag: str | None = DEFAULT_TAG  # what `docker pull` assumes
    else:
        tag = match["tag"]
    return EcrImage(
        uri=uri.strip(),
        account=match["account"],
        region=region,
        partition=partition,
        repository=match["repository"],
        tag=tag,
        digest=match["digest"],
    )


def default_ecr_image(repository: str = DEFAULT_REPOSITORY, tag: str = DEFAULT_TAG) -> EcrImage:
    """The image ``REPOSITORY:TAG`` in the account and region the stack is deployed to.

    Used when no image URI is given, so that ``cdk synth`` works on a fresh clone; the
    account and region stay CloudFormation pseudo parameters (nothing is hard-coded).
    """
    registry = f"{Aws.ACCOUNT_ID}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}"
    return EcrImage(
        uri=f"{registry}/{repository}:{tag}",
        account=Aws.ACCOUNT_ID,
        region=Aws.REGION,
        partition=Aws.PARTITION,
        repository=repository,
        tag=tag,
        digest=None,
    )


def read_image_detail(path: Path) -> str:
    """Return the ``ImageURI`` that a build wrote to ``imageDetail.json``.

    Raises:
        ValueError: the file is missing, is not JSON, or has no string ``ImageURI``.
    """
    try:
        detail = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"image_detail file {str(path)!r} does not exist; pass the imageDetail.json the "
            "build wrote, or give the image directly with -c image_uri=..."
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"image_detail file {str(path)!r} is not JSON: {exc}") from None
    uri = detail.get("ImageURI") if isinstance(detail, dict) else None
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(
            f'image_detail file {str(path)!r} has no "ImageURI" string; expected '
            '{"ImageURI": "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG"}'
        )
    return uri.strip()

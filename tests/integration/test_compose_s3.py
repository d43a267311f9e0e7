"""The compose stack's ``s3`` profile: models served from an S3 prefix in its moto server.

Runs only against the running stack: ``scripts/container-test`` brings it up with
``--profile s3`` and the emulator's prefix in the stack's S3
(``SCORER_MODEL_PREFIX=s3://scorer-models/endpoint/``, ``AWS_ENDPOINT_URL_S3=http://s3:5000``
inside), and sets ``SCORER_TEST_LOCAL_URL`` (the emulator) and ``SCORER_TEST_S3_URL`` (the
profile's S3 on the host, ``http://127.0.0.1:5000``). The test uploads archives there from
the host, as a developer would, and invokes them by ``TargetModel``. Natively,
``test_local_s3.py`` covers S3 prefixes with a moto server the tests start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from scorer.models.archive import pack_directory
from tests.support.clients import runtime_client
from tests.support.models import creative_model_dir, image_bytes
from tests.support.s3 import FAKE_AWS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

URL = os.environ.get("SCORER_TEST_LOCAL_URL")
S3_URL = os.environ.get("SCORER_TEST_S3_URL")
BUCKET = "scorer-models"
PREFIX = "endpoint/"


@pytest.mark.skipif(not (URL and S3_URL), reason="needs the compose stack's s3 profile")
def test_a_target_model_is_fetched_from_the_profiles_s3(tmp_path: Path) -> None:
    assert URL and S3_URL
    s3 = boto3.client(
        "s3",
        endpoint_url=S3_URL,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    archive = tmp_path / "fr.tar.gz"
    pack_directory(creative_model_dir(tmp_path, "market-fr", heads=("ctr",)), archive)
    s3.upload_file(str(archive), BUCKET, f"{PREFIX}market/fr.tar.gz")
    runtime = runtime_client(URL)

    answer = runtime.invoke_endpoint(
        EndpointName="scorer-local",
        TargetModel="market/fr.tar.gz",
        ContentType="image/jpeg",
        Body=image_bytes(),
    )
    body = json.loads(answer["Body"].read())
    assert body["model"] == "market-fr" and set(body["scores"][0]) == {"ctr"}

    with pytest.raises(runtime.exceptions.ValidationError) as missing:
        runtime.invoke_endpoint(
            EndpointName="scorer-local",
            TargetModel="market/de.tar.gz",
            ContentType="image/jpeg",
            Body=image_bytes(),
        )
    assert "market/de.tar.gz" in missing.value.response["Error"]["Message"]

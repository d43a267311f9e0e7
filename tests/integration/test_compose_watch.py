"""Hot reload in the compose stack: an archive rewritten in the bind-mounted models folder.

Runs only against a running emulator that watches its prefix: ``scripts/container-test``
restarts the compose stack's emulator with ``SCORER_LOCAL_WATCH=true`` and sets
``SCORER_TEST_LOCAL_URL`` (the emulator) and ``SCORER_TEST_LOCAL_PREFIX`` (the host folder
bind-mounted as its prefix). The emulator runs in a container and the archive is written on
the host, so this checks that file events cross the bind mount. Without them the test is
skipped: ``test_local_watch_prefix.py`` covers hot reload of a prefix natively.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scorer.models.archive import pack_directory
from tests.support.clients import runtime_client
from tests.support.models import VERSION_SCRIPT, add_code, creative_model_dir
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

URL = os.environ.get("SCORER_TEST_LOCAL_URL")
PREFIX = os.environ.get("SCORER_TEST_LOCAL_PREFIX")


@pytest.mark.skipif(not (URL and PREFIX), reason="needs a watching emulator by URL")
def test_an_archive_rewritten_in_the_bind_mounted_prefix_is_served_again(tmp_path: Path) -> None:
    """The next InvokeEndpoint after the archive changes on disk (written aside and renamed,
    as ``scorer package`` does) answers with the new code, nothing restarted. The wait only
    bounds a hang."""
    assert URL and PREFIX
    runtime = runtime_client(URL)
    archive = Path(PREFIX) / "reload.tar.gz"
    model_dir = creative_model_dir(tmp_path, "reload")
    add_code(model_dir, VERSION_SCRIPT.format(version="v1"))

    def version() -> str:
        answer = runtime.invoke_endpoint(
            EndpointName="scorer-local",
            TargetModel="reload.tar.gz",
            ContentType="application/octet-stream",
            Body=b"x",
        )
        return str(json.loads(answer["Body"].read())["version"])

    pack_directory(model_dir, archive)
    assert version() == "v1"
    (model_dir / "code" / "inference.py").write_text(VERSION_SCRIPT.format(version="v2"))
    pack_directory(model_dir, archive)
    wait_for(lambda: version() == "v2", 90, "the rewritten archive's code")

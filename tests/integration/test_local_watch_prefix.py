"""Hot reload of a directory model prefix (``scorer local --model-prefix DIR --watch``).

One emulator and one real Multi Model Server; the archive ``hot.tar.gz`` in the prefix is
rewritten on disk (``pack_directory`` writes a temporary file and renames it, as
``scorer package`` does) and the tests wait, with a bound that only stops a hang, until
``InvokeEndpoint`` with ``TargetModel="hot.tar.gz"`` answers with the new code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scorer.cache import CacheSettings, model_hash
from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from scorer.models.archive import pack_directory
from tests.support.models import VERSION_SCRIPT, add_code, creative_model_dir
from tests.support.waiting import wait_for
from tests.support.watching import WatchedEndpoint, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RELOAD_BOUND = 90.0  # seconds: only stops a hang
SLOT = model_hash("hot.tar.gz")



class Prefix(WatchedEndpoint):
    """The watched prefix, the model directory its ``hot.tar.gz`` is packed from, and the
    running emulator."""

    def __init__(self, root: Path, model_dir: Path, url: str, local: LocalEndpoint) -> None:
        super().__init__(url, local)
        self.root = root
        self.model_dir = model_dir

    def publish(self, script: str) -> None:
        (self.model_dir / "code" / "inference.py").write_text(script)
        pack_directory(self.model_dir, self.root / "hot.tar.gz")

    def invoke(self) -> str:
        response = self.runtime.invoke_endpoint(
            EndpointName="scorer-local",
            TargetModel="hot.tar.gz",
            ContentType="application/octet-stream",
            Body=b"x",
        )
        return str(json.loads(response["Body"].read())["version"])

    def cached(self) -> set[str]:
        root = self.local.settings.cache.cache_dir
        return {path.name for path in root.iterdir() if not path.name.startswith(".")}


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prefix]:
    build = tmp_path_factory.mktemp("build")
    root = tmp_path_factory.mktemp("prefix")
    model_dir = add_code(creative_model_dir(build, "hot"), VERSION_SCRIPT.format(version="v1"))
    pack_directory(model_dir, root / "hot.tar.gz")
    settings = LocalSettings(
        port=0,
        cache=CacheSettings(model_prefix=str(root), cache_dir=tmp_path_factory.mktemp("cache")),
        cache_dir_set=True,
        run_dir=tmp_path_factory.mktemp("run"),
        watch=True,
    )
    with running(settings) as (url, local):
        yield Prefix(root, model_dir, url, local)


def test_an_archive_rewritten_on_disk_serves_its_new_code(prefix: Prefix) -> None:
    assert prefix.invoke() == "v1"
    assert prefix.registered() == {SLOT}
    prefix.publish(VERSION_SCRIPT.format(version="v2"))
    wait_for(lambda: prefix.serves("v2"), RELOAD_BOUND, "the new archive's code")
    wait_for(lambda: prefix.cache_stats()["retiring"] == [], 60, "the old version's unload")
    resident = prefix.cache_stats()["resident"]
    assert [(m["model"], m["name"]) for m in resident] == [("hot.tar.gz", f"{SLOT}-r1")]
    assert prefix.registered() == {f"{SLOT}-r1"}
    assert prefix.cached() == {f"{SLOT}-r1"}  # the old version's files are gone


def test_an_archive_whose_code_does_not_import_is_a_model_error_until_fixed(
    prefix: Prefix,
) -> None:
    prefix.publish("import json\n\ndef predict_fn(data, model)\n    return data\n")
    wait_for(lambda: prefix.model_error() is not None, RELOAD_BOUND, "the ModelError")
    error = prefix.model_error()  # every request, until the archive is fixed
    assert error is not None
    message = error["Error"]["Message"]
    assert error["OriginalStatusCode"] == 500
    assert "'hot.tar.gz' failed to load" in message
    assert "SyntaxError" in message and "code/inference.py, line 3" in message
    wait_for(lambda: prefix.registered() == set(), 60, "the old version's unload")
    prefix.publish(VERSION_SCRIPT.format(version="v3"))
    wait_for(lambda: prefix.serves("v3"), RELOAD_BOUND, "the fixed archive's code")
    assert len(prefix.registered()) == 1

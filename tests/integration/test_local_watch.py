"""Hot reload of a single model (``scorer local --model-dir DIR --watch``) through boto3.

One emulator and one real Multi Model Server for the module; the model directory's
``code/inference.py`` is edited on disk as a developer would, and the tests wait (with a
bound that only stops a hang) until the endpoint answers with the new code. Each version
answers ``{"version": ...}``; a request with ``hold=yes`` waits in ``predict_fn`` until the
test creates a file, so that it is in flight on the old version while the new one loads.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scorer.local.runner import LocalEndpoint
from scorer.local.settings import LocalSettings
from tests.support.models import add_code, creative_model_dir
from tests.support.waiting import wait_for
from tests.support.watching import WatchedEndpoint, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ENDPOINT = "hot"
RELOAD_BOUND = 90.0  # seconds: only stops a hang

SCRIPT = """import json
import pathlib
import time

VERSION = "{version}"
HOLD = pathlib.Path({hold!r})


def input_fn(body, content_type, context):
    return context.attribute("hold") == "yes"


def predict_fn(held, model):
    deadline = time.monotonic() + 60
    while held and not HOLD.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return VERSION


def output_fn(prediction, accept, context):
    return json.dumps({{"version": prediction}}), "application/json"
"""


class Model(WatchedEndpoint):
    """The watched model directory and the running emulator in front of it."""

    def __init__(self, model_dir: Path, url: str, local: LocalEndpoint, hold: Path) -> None:
        super().__init__(url, local)
        self.dir = model_dir
        self.hold = hold

    @property
    def script(self) -> Path:
        return self.dir / "code" / "inference.py"

    def write(self, version: str, text: str | None = None) -> None:
        self.script.write_text(text or SCRIPT.format(version=version, hold=str(self.hold)))

    def invoke(self, hold: bool = False) -> str:
        response = self.runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            ContentType="application/octet-stream",
            CustomAttributes="hold=yes" if hold else "hold=no",
            Body=b"x",
        )
        return str(json.loads(response["Body"].read())["version"])

    def versions(self) -> dict[str, Any]:
        return dict(self.cache_stats()["versions"])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    build = tmp_path_factory.mktemp("build")
    hold = build / "release-the-held-request"
    model_dir = add_code(
        creative_model_dir(build, "hot"), SCRIPT.format(version="v1", hold=str(hold))
    )
    settings = LocalSettings(
        port=0,
        endpoint_name=ENDPOINT,
        model_dir=model_dir,
        run_dir=tmp_path_factory.mktemp("run"),
        watch=True,
    )
    with running(settings) as (url, local):
        yield Model(model_dir, url, local, hold)


def test_a_saved_edit_serves_the_new_code_and_a_request_in_flight_ends_on_the_old(
    model: Model,
) -> None:
    assert model.invoke() == "v1"
    assert model.versions()["serving"] == "model-r1"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(model.invoke, True)
        wait_for(lambda: model.versions()["in_flight"] == 1, 60, "the held request")
        model.write("v2")
        wait_for(
            lambda: model.versions()["serving"] not in (None, "model-r1"),
            RELOAD_BOUND,
            "the new version",
        )
        assert model.invoke() == "v2"  # new requests: the new version
        during = model.versions()
        assert during["failure"] is None
        assert during["retiring"] == [{"name": "model-r1", "in_flight": 1}]
        assert {"model-r1", during["serving"]} <= model.registered()
        model.hold.touch()
        assert held.result(timeout=90) == "v1"  # finished on the old version
    wait_for(lambda: model.versions()["retiring"] == [], 60, "the old version's unload")
    assert model.registered() == {model.versions()["serving"]}


def test_a_syntax_error_is_a_model_error_naming_its_file_and_line_until_fixed(
    model: Model,
) -> None:
    model.write("broken", "import json\n\ndef predict_fn(data, model)\n    return data\n")
    wait_for(lambda: model.model_error() is not None, RELOAD_BOUND, "the ModelError")
    error = model.model_error()  # and again: it stays until the file is fixed
    assert error is not None
    message = error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 500
    assert "SyntaxError" in message
    assert "code/inference.py, line 3" in message
    assert str(model.dir) in message
    wait_for(lambda: model.registered() == set(), 60, "the old version's unload")
    model.write("v3")
    wait_for(lambda: model.serves("v3"), RELOAD_BOUND, "the fixed code")
    assert model.versions()["failure"] is None


def test_a_missing_name_is_a_model_error_naming_its_line(model: Model) -> None:
    script = SCRIPT.format(version="v4", hold=str(model.hold))
    model.write("typo", script.replace('VERSION = "v4"', "VERSION = undefined_version"))
    wait_for(lambda: model.model_error() is not None, RELOAD_BOUND, "the ModelError")
    error = model.model_error()
    assert error is not None
    message = error["Error"]["Message"]
    assert "NameError" in message and "undefined_version" in message
    assert "code/inference.py, line 5" in message
    model.write("v4")
    wait_for(lambda: model.serves("v4"), RELOAD_BOUND, "the fixed code")


def test_an_editor_save_burst_is_one_reload(model: Model) -> None:
    before = model.versions()["loads"]
    code = model.script.parent
    # what an editor's save does: a swap file, a backup, a new file renamed over the old
    (code / ".inference.py.swp").write_text("swap")
    (code / "inference.py~").write_text(model.script.read_text())
    temporary = code / "inference.py.saving"
    temporary.write_text(SCRIPT.format(version="v5", hold=str(model.hold)))
    os.replace(temporary, model.script)
    model.script.chmod(0o644)
    wait_for(lambda: model.serves("v5"), RELOAD_BOUND, "the saved code")
    assert model.versions()["loads"] == before + 1


def test_a_change_to_the_weights_loads_the_model_again(model: Model) -> None:
    serving = model.versions()["serving"]
    weights = model.dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    wait_for(
        lambda: model.versions()["serving"] not in (None, serving),
        RELOAD_BOUND,
        "the reload after the weights changed",
    )
    assert model.invoke() == "v5"

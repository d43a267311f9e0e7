"""EMF lines from the real multi-model server: ``entrypoint.py serve`` as the container runs
it, with a 1 s interval; its stdout must carry each model's request counts, per code, and
SIGTERM's last flush must not count anything twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.models import creative_model_dir, image_bytes
from tests.support.processes import serving_entrypoint
from tests.support.servers import external_url, load, server_environ
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def emf_documents(log: Path) -> list[dict[str, Any]]:
    """The EMF documents among the server's output lines."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"_aws"'):
            found.append(json.loads(line))
    return found


def requests_in(log: Path) -> dict[tuple[str, str], float]:
    """``Requests`` summed over every document, by (model, code)."""
    totals: dict[tuple[str, str], float] = {}
    for document in emf_documents(log):
        if "Requests" in document:
            key = (document["model"], document["code"])
            totals[key] = totals.get(key, 0) + document["Requests"]
    return totals


def test_the_server_writes_per_model_request_counts_to_stdout(tmp_path: Path) -> None:
    if external_url() is not None:
        pytest.skip("starts its own server")
    models_root = tmp_path / "models"
    model_dir = creative_model_dir(models_root, "m1")
    env = server_environ(
        tmp_path / "run",
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SCORER_MODELS_ROOT": str(models_root),
            "SCORER_EMF_INTERVAL_SECONDS": "1",
            "SCORER_METRICS_NAMESPACE": "scorer-test",
        },
    )
    log = tmp_path / "serve.log"
    expected = {("m1", "200"): 2, ("m1", "400"): 1}
    with serving_entrypoint(env, log) as (_process, url):
        with httpx.Client(base_url=url, timeout=180) as client:
            assert load(client, "m1", model_dir).status_code == 200
            statuses = [
                client.post(
                    "/models/m1/invoke", content=body, headers={"Content-Type": "image/jpeg"}
                ).status_code
                for body in (image_bytes(), image_bytes(), b"not an image")
            ]
            assert statuses == [200, 200, 400]
        wait_for(lambda: requests_in(log) == expected, 60, "EMF lines with m1's requests")

    assert requests_in(log) == expected  # SIGTERM's flush added nothing twice
    documents = emf_documents(log)
    directives = [d["_aws"]["CloudWatchMetrics"][0] for d in documents]
    assert {directive["Namespace"] for directive in directives} == {"scorer-test"}
    model = [d for d in documents if d.get("model") == "m1" and "ModelsLoaded" in d]
    assert model and model[0]["ModelsLoaded"] == 1
    assert any(d.get("ModelLoads") == 1 and d.get("outcome") == "success" for d in documents)


def test_sigterm_flushes_what_the_interval_had_not_written_for_both_models(
    tmp_path: Path,
) -> None:
    """With an hour's interval nothing is written while the server runs: every EMF line
    comes from the flush on SIGTERM, for both models, each with its ``model`` dimension."""
    if external_url() is not None:
        pytest.skip("starts its own server")
    models_root = tmp_path / "models"
    dirs = {name: creative_model_dir(models_root, name) for name in ("m1", "m2")}
    env = server_environ(
        tmp_path / "run",
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SCORER_MODELS_ROOT": str(models_root),
            "SCORER_EMF_INTERVAL_SECONDS": "3600",
        },
    )
    log = tmp_path / "serve.log"
    with serving_entrypoint(env, log) as (_process, url):
        with httpx.Client(base_url=url, timeout=180) as client:
            for name, model_dir in dirs.items():
                assert load(client, name, model_dir).status_code == 200
            for name, count in (("m1", 2), ("m2", 1)):
                for _ in range(count):
                    response = client.post(
                        f"/models/{name}/invoke",
                        content=image_bytes(),
                        headers={"Content-Type": "image/jpeg"},
                    )
                    assert response.status_code == 200, response.text
        assert requests_in(log) == {}  # the interval has not come: nothing written yet
    # serving_entrypoint has sent SIGTERM and waited for the process
    assert requests_in(log) == {("m1", "200"): 2, ("m2", "200"): 1}
    for document in emf_documents(log):
        if "Requests" in document:
            dimensions = document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
            assert ["model", "code"] in dimensions or ["model"] in dimensions, dimensions

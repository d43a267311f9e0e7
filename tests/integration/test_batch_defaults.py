"""Server-wide batching defaults for models registered without batch settings, real MMS.

SageMaker loads a model on a multi-model endpoint with ``POST /models {"model_name", "url"}``
only, and MMS 1.1.11 (``RegisterModelRequest``) registers it with batch size 1 and a 100 ms
batch delay. scorer's plugin jar replaces that class so such a load gets the MMS properties
``scorer_max_batch_size`` / ``scorer_max_batch_delay_ms`` (from ``SCORER_MAX_BATCH_SIZE`` /
``SCORER_MAX_BATCH_DELAY_MS``), while a load that names ``batch_size`` / ``max_batch_delay``
keeps them (docs/contract.md, "Batching a model SageMaker registered"). Over HTTP: a server
configured with 8 and 5 ms. At the class (Java, no sockets): MMS's own class ignores the
properties (pinned), scorer's uses them, and without them keeps MMS's 1 and 100.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.java import compile_harness, plugins_jar, run_harness
from tests.support.models import creative_model_dir, image_bytes
from tests.support.servers import external_url, load, running_server

pytestmark = pytest.mark.integration

BATCH_SIZE = 8
BATCH_DELAY_MS = 5
SCORER_PROPERTIES = {"scorer_max_batch_size": "8", "scorer_max_batch_delay_ms": "5"}
# models whose spec.json overrides the server's batching defaults ("batching")
SPEC_BATCHING = {
    "spec-batch": {"max_batch_size": 3, "max_delay_ms": 7},
    "spec-delay": {"max_delay_ms": 9},
}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared_root = os.environ.get("SCORER_TEST_MODELS_ROOT")
    root = Path(shared_root) if shared_root else tmp_path_factory.mktemp("models")
    for name in ("sagemaker-load", "query-batch", "json-batch", *SPEC_BATCHING):
        if not (root / name / "model").exists():
            creative_model_dir(root, name)
    for name, limits in SPEC_BATCHING.items():
        spec_file = root / name / "model" / "spec.json"
        spec = json.loads(spec_file.read_text())
        spec_file.write_text(json.dumps({**spec, "batching": limits}))
    return root


@pytest.fixture(scope="module")
def client(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    run_dir = tmp_path_factory.mktemp("run")
    extra = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SCORER_MODELS_ROOT": str(models_root),
        "SCORER_MAX_BATCH_SIZE": str(BATCH_SIZE),
        "SCORER_MAX_BATCH_DELAY_MS": str(BATCH_DELAY_MS),
    }
    with (
        running_server(run_dir, extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        if external_url() is None:
            written = (run_dir / "mms.properties").read_text().splitlines()
            for key, value in SCORER_PROPERTIES.items():
                assert f"{key}={value}" in written, written
        yield http


def described(client: httpx.Client, name: str) -> dict[str, object]:
    response = client.get(f"/models/{name}")
    assert response.status_code == 200, response.text
    body = response.json()
    model: dict[str, object] = body[0] if isinstance(body, list) else body
    return model


def test_a_sagemaker_load_gets_the_server_defaults(client: httpx.Client, models_root: Path) -> None:
    """``{"model_name", "url"}`` and nothing else, as SageMaker sends it."""
    response = load(client, "sagemaker-load", models_root / "sagemaker-load" / "model")
    assert response.status_code == 200, response.text
    model = described(client, "sagemaker-load")
    assert (model["batchSize"], model["maxBatchDelay"]) == (BATCH_SIZE, BATCH_DELAY_MS), model
    scored = client.post(
        "/models/sagemaker-load/invoke",
        content=image_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    assert scored.status_code == 200, scored.text


def test_a_model_spec_overrides_the_server_defaults(
    client: httpx.Client, models_root: Path
) -> None:
    """spec.json's ``batching`` applies to a SageMaker load; a member it leaves out keeps the
    server's default; a request that names a batch size still wins over the spec."""
    for name in SPEC_BATCHING:
        response = load(client, name, models_root / name / "model")
        assert response.status_code == 200, response.text
    spec_batch = described(client, "spec-batch")
    assert (spec_batch["batchSize"], spec_batch["maxBatchDelay"]) == (3, 7), spec_batch
    spec_delay = described(client, "spec-delay")
    assert (spec_delay["batchSize"], spec_delay["maxBatchDelay"]) == (BATCH_SIZE, 9)
    assert client.delete("/models/spec-batch").status_code == 200
    query = {
        "model_name": "spec-batch",
        "url": str(models_root / "spec-batch" / "model"),
        "batch_size": "2",
        "initial_workers": "0",
    }
    response = client.post(f"/models?{urlencode(query)}", timeout=180)
    assert response.status_code == 200, response.text
    model = described(client, "spec-batch")
    assert (model["batchSize"], model["maxBatchDelay"]) == (2, 7), model


def test_a_batch_size_in_the_query_wins(client: httpx.Client, models_root: Path) -> None:
    query = {
        "model_name": "query-batch",
        "url": str(models_root / "query-batch" / "model"),
        "batch_size": "2",
        "initial_workers": "0",
    }
    response = client.post(f"/models?{urlencode(query)}", timeout=180)
    assert response.status_code == 200, response.text
    model = described(client, "query-batch")
    assert (model["batchSize"], model["maxBatchDelay"]) == (2, BATCH_DELAY_MS), model


def test_a_batch_size_in_the_json_body_wins(client: httpx.Client, models_root: Path) -> None:
    body = {
        "model_name": "json-batch",
        "url": str(models_root / "json-batch" / "model"),
        "batch_size": 2,
        "max_batch_delay": 40,
        "initial_workers": 0,
    }
    response = client.post("/models", json=body, timeout=180)
    assert response.status_code == 200, response.text
    model = described(client, "json-batch")
    assert (model["batchSize"], model["maxBatchDelay"]) == (2, 40), model


# Builds the parameters of POST /models the way MMS's ManagementRequestHandler does (query
# string, or Gson from a JSON body), with MMS's ConfigManager read from a properties file.
# With "patched", scorer's plugin class is initialised first, as MMS does at start-up; with
# "late", after MMS's own class was loaded.
REGISTRATIONS_JAVA = """
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.JsonUtils;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.lang.reflect.Field;

public class Registrations {
    public static void main(String[] args) throws Exception {
        ConfigManager.Arguments arguments = new ConfigManager.Arguments();
        arguments.setMmsConfigFile(args[0]);
        ConfigManager.init(arguments);
        if (args.length > 1 && args[1].equals("late")) {
            // MMS's own class loaded before the plugin: too late to replace it
            Class.forName("com.amazonaws.ml.mms.http.messages.RegisterModelRequest");
        }
        if (args.length > 1) {
            Class<?> fix = Class.forName("ai.scorer.mms.BatchDefaults");
            Field status = fix.getDeclaredField("STATUS");
            status.setAccessible(true);
            System.out.println("status|" + status.get(null));
        }
        // by name, after the plugin: a direct reference would load MMS's class first
        Class<?> request = Class.forName("com.amazonaws.ml.mms.http.messages.RegisterModelRequest");
        String[] queries = {"", "&batch_size=2", "&max_batch_delay=40", "&batch_size=x"};
        for (String query : queries) {
            Object parsed = request.getConstructor(QueryStringDecoder.class)
                    .newInstance(new QueryStringDecoder("/models?model_name=m&url=u" + query));
            print("query" + query, request, parsed);
        }
        String[] bodies = {"", ",\\"batch_size\\":2", ",\\"max_batch_delay\\":40"};
        for (String body : bodies) {
            String json = "{\\"model_name\\":\\"m\\",\\"url\\":\\"u\\"" + body + "}";
            Object parsed = JsonUtils.GSON.fromJson(json, request);
            print("json" + body.replace("\\"", ""), request, parsed);
        }
    }

    static void print(String name, Class<?> request, Object parsed) throws Exception {
        System.out.println(name + "|" + request.getMethod("getBatchSize").invoke(parsed)
                + "," + request.getMethod("getMaxBatchDelay").invoke(parsed)
                + "," + request.getMethod("getModelName").invoke(parsed)
                + "," + request.getMethod("getModelUrl").invoke(parsed)
                + "," + request.getMethod("isSynchronous").invoke(parsed)
                + "," + request.getMethod("getResponseTimeoutSeconds").invoke(parsed));
    }
}
"""


@pytest.fixture(scope="module")
def registrations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = compile_harness(tmp_path_factory.mktemp("java"), "Registrations", REGISTRATIONS_JAVA)
    return folder


def run_registrations(
    folder: Path, properties: dict[str, str], *, patched: bool, mode: str = "patched"
) -> dict[str, tuple[str, ...]]:
    config = folder / "mms.properties"
    lines = ["default_workers_per_model=1", *(f"{k}={v}" for k, v in properties.items())]
    config.write_text("\n".join(lines) + "\n")
    args = [str(config)] + ([mode] if patched else [])
    out = run_harness(folder, "Registrations", args, patched=patched)
    pairs = (line.split("|", 1) for line in out.splitlines() if "|" in line)
    return {key: tuple(value.split(",")) for key, value in pairs}


def batching(result: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {key: value[:2] for key, value in result.items() if key != "status"}


def test_mms_ignores_the_scorer_properties(registrations: Path) -> None:
    """MMS 1.1.11's own class, pinned: 1 and 100 unless the request names them."""
    result = run_registrations(registrations, SCORER_PROPERTIES, patched=False)
    assert batching(result) == {
        "query": ("1", "100"),
        "query&batch_size=2": ("2", "100"),
        "query&max_batch_delay=40": ("1", "40"),
        "query&batch_size=x": ("1", "100"),
        "json": ("1", "100"),
        "json,batch_size:2": ("2", "100"),
        "json,max_batch_delay:40": ("1", "40"),
    }, result


def test_scorer_class_uses_the_properties_unless_the_request_names_them(
    registrations: Path,
) -> None:
    assert plugins_jar().is_file(), f"{plugins_jar()} missing: run scripts/build-plugins"
    result = run_registrations(registrations, SCORER_PROPERTIES, patched=True)
    assert result["status"] == ("installed",), result
    assert batching(result) == {
        "query": ("8", "5"),
        "query&batch_size=2": ("2", "5"),
        "query&max_batch_delay=40": ("8", "40"),
        "query&batch_size=x": ("8", "5"),
        "json": ("8", "5"),
        "json,batch_size:2": ("2", "5"),
        "json,max_batch_delay:40": ("8", "40"),
    }, result
    # everything else as MMS parses it: names, url, synchronous, no response timeout
    unpatched = run_registrations(registrations, SCORER_PROPERTIES, patched=False)
    assert {k: v[2:] for k, v in result.items() if k != "status"} == {
        k: v[2:] for k, v in unpatched.items()
    }


def test_without_the_scorer_properties_mms_defaults_stay(registrations: Path) -> None:
    result = run_registrations(registrations, {}, patched=True)
    assert result["status"] == ("installed",), result
    assert batching(result) == {
        "query": ("1", "100"),
        "query&batch_size=2": ("2", "100"),
        "query&max_batch_delay=40": ("1", "40"),
        "query&batch_size=x": ("1", "100"),
        "json": ("1", "100"),
        "json,batch_size:2": ("2", "100"),
        "json,max_batch_delay:40": ("1", "40"),
    }, result


def test_invalid_scorer_properties_fall_back_to_mms_defaults(registrations: Path) -> None:
    invalid = {"scorer_max_batch_size": "0", "scorer_max_batch_delay_ms": "soon"}
    result = run_registrations(registrations, invalid, patched=True)
    assert batching(result)["query"] == ("1", "100"), result
    assert batching(result)["json"] == ("1", "100"), result


def test_too_late_keeps_mms_class_and_says_why(registrations: Path) -> None:
    """The fallback: MMS's class already loaded, nothing is replaced, MMS works as before."""
    result = run_registrations(registrations, SCORER_PROPERTIES, patched=True, mode="late")
    (status,) = result["status"]
    assert status.startswith("not installed: java.lang.LinkageError"), result
    assert batching(result)["query"] == ("1", "100"), result
    assert batching(result)["json,batch_size:2"] == ("2", "100"), result

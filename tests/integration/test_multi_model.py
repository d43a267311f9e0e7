"""The multi-model contract against the real Multi Model Server (Java), over HTTP.

Models are real archives (real torch weights) extracted the way SageMaker does, to
``<models root>/<name>/model``, then loaded with ``POST /models``.

``SCORER_TEST_URL`` runs the suite against an already running multi-model server (the
container, from ``scripts/container-test``); ``SCORER_TEST_MODELS_ROOT`` is then its models
root, which the fixtures fill and the server must see at the same path.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import (
    ECHO_SCRIPT,
    FAILING_MODEL_FN,
    add_code,
    creative_model_dir,
    image_bytes,
    tar_model_dir,
    torchscript_model_dir,
)
from tests.support.servers import external_url, load, running_server

pytestmark = pytest.mark.integration

AWS_STYLE_MODEL_FN_ONLY = """
import os
import torch

def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt"))
"""

AWS_STYLE_TRANSFORM_FN = """
import json

def model_fn(model_dir):
    return "transform-model"

def transform_fn(model, data, content_type, accept):
    return json.dumps({"model": model, "bytes": len(data), "type": content_type}), accept
"""

REQUIREMENTS_SCRIPT = """
import json
import termcolor
from importlib.metadata import version

def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    return json.dumps({"termcolor": version("termcolor"), "path": termcolor.__file__}), accept
"""

# Out of memory by exception class (torch.cuda.OutOfMemoryError exists in CPU builds too).
OOM_ON_REQUEST = """
import json
import torch

def model_fn(model_dir):
    return "oom-model"

def transform_fn(model, data, content_type, accept):
    if data == b"oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return json.dumps({"bytes": len(data)}), "application/json"
"""

OOM_AT_LOAD = """
import torch

def model_fn(model_dir):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
"""


def extract_like_sagemaker(archive: Path, models_root: Path, name: str) -> Path:
    """SageMaker downloads model.tar.gz and extracts it to /opt/ml/models/<name>/model."""
    target = models_root / name / "model"
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build = tmp_path_factory.mktemp("build")
    shared_root = os.environ.get("SCORER_TEST_MODELS_ROOT")
    root = Path(shared_root) if shared_root else tmp_path_factory.mktemp("models")
    ts = torchscript_model_dir
    dirs = {
        "creative-a": creative_model_dir(build, "creative-a", seed=1),
        "creative-b": creative_model_dir(build, "creative-b", heads=("ctr",), seed=2),
        "tensor": ts(build, "tensor"),
        "custom": add_code(creative_model_dir(build, "custom"), ECHO_SCRIPT),
        "aws-model-fn": add_code(ts(build, "aws-model-fn"), AWS_STYLE_MODEL_FN_ONLY),
        "aws-transform": add_code(ts(build, "aws-transform"), AWS_STYLE_TRANSFORM_FN),
        "broken": add_code(creative_model_dir(build, "broken"), FAILING_MODEL_FN),
        "oom-request": add_code(ts(build, "oom-request"), OOM_ON_REQUEST),
        "oom-load": add_code(ts(build, "oom-load"), OOM_AT_LOAD),
        "reqs-old": add_code(ts(build, "reqs-old"), REQUIREMENTS_SCRIPT, "termcolor==2.3.0\n"),
        "reqs-new": add_code(ts(build, "reqs-new"), REQUIREMENTS_SCRIPT, "termcolor==2.4.0\n"),
    }
    extracted = {}
    for name, model_dir in dirs.items():
        archive = tar_model_dir(model_dir, build / f"{name}.tar.gz")
        extracted[name] = extract_like_sagemaker(archive, root, name)
    extracted["__root__"] = root
    return extracted


@pytest.fixture(scope="module")
def client(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    run_dir = tmp_path_factory.mktemp("run")
    extra = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(models["__root__"])}
    with (
        running_server(run_dir, extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        for name in ("creative-a", "creative-b", "tensor"):
            response = load(http, name, models[name])
            assert response.status_code == 200, response.text
        yield http


def test_ping(client: httpx.Client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200


def test_list_and_describe_loaded_models(client: httpx.Client, models: dict[str, Path]) -> None:
    listed = client.get("/models").json()["models"]
    names = {m["modelName"] for m in listed}
    assert {"creative-a", "creative-b", "tensor"} <= names
    urls = {m["modelName"]: m["modelUrl"] for m in listed}
    assert urls["creative-a"] == str(models["creative-a"])
    described = client.get("/models/creative-b")
    assert described.status_code == 200
    body = described.json()
    entry = body[0] if isinstance(body, list) else body
    assert entry["modelName"] == "creative-b"


@pytest.mark.parametrize("fmt,content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_invoke_image_returns_named_scores(
    client: httpx.Client, fmt: str, content_type: str
) -> None:
    response = client.post(
        "/models/creative-a/invoke",
        content=image_bytes(fmt),
        headers={
            "Content-Type": content_type,
            "X-Amzn-SageMaker-Target-Model": "creative-a.tar.gz",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["model"] == "creative-a" and body["version"] == "1"
    assert len(body["scores"]) == 1
    assert set(body["scores"][0]) == {"appeal", "clarity"}
    assert all(isinstance(v, float) for v in body["scores"][0].values())


def test_each_model_answers_with_its_own_heads(client: httpx.Client) -> None:
    jpeg = image_bytes()
    a = client.post(
        "/models/creative-a/invoke", content=jpeg, headers={"Content-Type": "image/jpeg"}
    )
    b = client.post(
        "/models/creative-b/invoke", content=jpeg, headers={"Content-Type": "image/jpeg"}
    )
    assert a.json()["model"] == "creative-a" and set(a.json()["scores"][0]) == {"appeal", "clarity"}
    assert b.json()["model"] == "creative-b" and set(b.json()["scores"][0]) == {"ctr"}


def test_json_batch_of_base64_images_is_one_request(client: httpx.Client) -> None:
    images = [base64.b64encode(image_bytes(seed=i)).decode() for i in range(3)]
    response = client.post("/models/creative-a/invoke", json={"images": images})
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert len(scores) == 3
    single = client.post(
        "/models/creative-a/invoke",
        content=image_bytes(seed=1),
        headers={"Content-Type": "image/jpeg"},
    ).json()["scores"][0]
    assert scores[1] == pytest.approx(single, abs=1e-4)


def test_accept_csv_and_npy_for_image_scores(client: httpx.Client) -> None:
    jpeg = image_bytes()
    csv = client.post(
        "/models/creative-a/invoke",
        content=jpeg,
        headers={"Content-Type": "image/jpeg", "Accept": "text/csv"},
    )
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    header, row = csv.text.strip().splitlines()
    assert header == "appeal,clarity" and len(row.split(",")) == 2
    npy = client.post(
        "/models/creative-a/invoke",
        content=jpeg,
        headers={"Content-Type": "image/jpeg", "Accept": "application/x-npy"},
    )
    assert npy.status_code == 200
    assert np.load(io.BytesIO(npy.content)).shape == (1, 2)


def test_tensor_inputs_are_encoded_as_is(client: httpx.Client) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]
    expected = [[1.5, 8.0], [0.5, -1.0]]
    as_json = client.post("/models/tensor/invoke", json=rows)
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(as_json.json(), expected, rtol=1e-6)
    buf = io.BytesIO()
    np.save(buf, np.array(rows, dtype=np.float32))
    as_npy = client.post(
        "/models/tensor/invoke",
        content=buf.getvalue(),
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    assert as_npy.status_code == 200
    np.testing.assert_allclose(np.load(io.BytesIO(as_npy.content)), expected, rtol=1e-6)
    as_csv = client.post(
        "/models/tensor/invoke",
        content=b"1,2,3,4\n0,0,0,0\n",
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert as_csv.status_code == 200
    parsed = [[float(v) for v in line.split(",")] for line in as_csv.text.strip().splitlines()]
    np.testing.assert_allclose(parsed, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "body,headers,status,fragment",
    [
        (b"not an image", {"Content-Type": "image/jpeg"}, 400, "not a decodable image"),
        (b"{bad json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
        (b"x", {"Content-Type": "application/xml"}, 415, "unsupported Content-Type"),
        (b"", {"Content-Type": "image/png"}, 400, "empty"),
        (b"[[1, 2]]", {"Content-Type": "application/json"}, 400, "rejected by the model"),
    ],
)
def test_client_errors_are_4xx_json_without_traceback(
    client: httpx.Client, body: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    model = "tensor" if b"[[1, 2]]" in body else "creative-a"
    response = client.post(f"/models/{model}/invoke", content=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == status
    assert fragment in payload["message"]
    assert "Traceback" not in response.text
    # the worker is still alive: the next good request succeeds
    ok = client.post(
        "/models/creative-a/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    assert ok.status_code == 200


def test_unsupported_accept_is_406(client: httpx.Client) -> None:
    response = client.post(
        "/models/creative-a/invoke",
        content=image_bytes(),
        headers={"Content-Type": "image/jpeg", "Accept": "application/xml"},
    )
    assert response.status_code == 406
    assert "unsupported Accept" in response.json()["message"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    assert client.get("/models/nope").status_code == 404
    assert client.post("/models/nope/invoke", content=b"x").status_code == 404
    assert client.delete("/models/nope").status_code == 404


def test_loading_twice_is_409(client: httpx.Client, models: dict[str, Path]) -> None:
    response = load(client, "creative-a", models["creative-a"])
    assert response.status_code == 409


def test_unload_then_reload(client: httpx.Client, models: dict[str, Path]) -> None:
    assert load(client, "creative-b", models["creative-b"]).status_code in (200, 409)
    assert client.delete("/models/creative-b").status_code == 200
    assert client.get("/models/creative-b").status_code == 404
    gone = client.post(
        "/models/creative-b/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    assert gone.status_code == 404
    assert load(client, "creative-b", models["creative-b"]).status_code == 200
    back = client.post(
        "/models/creative-b/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    assert back.status_code == 200 and back.json()["model"] == "creative-b"


def test_user_script_sees_custom_attributes_and_sets_them(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    assert load(client, "custom", models["custom"]).status_code == 200
    response = client.post(
        "/models/custom/invoke",
        content=b"12345",
        headers={
            "Content-Type": "application/octet-stream",
            "X-Amzn-SageMaker-Custom-Attributes": "tag=blue;trace=1",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"n": 5, "tag": "blue"}
    assert response.headers["x-amzn-sagemaker-custom-attributes"] == "echo=blue"


def test_aws_toolkit_style_scripts_work_unchanged(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    assert load(client, "aws-model-fn", models["aws-model-fn"]).status_code == 200
    response = client.post("/models/aws-model-fn/invoke", json=[[1.0, 2.0, 3.0, 4.0]])
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), [[1.5, 8.0]], rtol=1e-6)
    assert load(client, "aws-transform", models["aws-transform"]).status_code == 200
    response = client.post(
        "/models/aws-transform/invoke", content=b"abc", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "transform-model", "bytes": 3, "type": "text/plain"}


def test_failing_model_fn_fails_the_load_and_others_keep_serving(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    response = load(client, "broken", models["broken"])
    assert response.status_code == 500
    body = response.json()  # the reason, not MMS's "Failed to start workers"
    assert (body["code"], body["type"]) == (500, "RuntimeError"), body
    assert body["message"].startswith("RuntimeError: weights are corrupt on purpose"), body
    assert "Traceback" not in response.text
    # answered only once MMS has unregistered it
    listed = [m["modelName"] for m in client.get("/models").json()["models"]]
    assert "broken" not in listed
    assert client.get("/models/broken").status_code == 404
    ok = client.post(
        "/models/creative-a/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    assert ok.status_code == 200


def test_out_of_memory_on_a_request_is_507_and_the_worker_keeps_serving(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    assert load(client, "oom-request", models["oom-request"]).status_code == 200
    response = client.post("/models/oom-request/invoke", content=b"oom")
    assert response.status_code == 507
    body = response.json()
    assert body["code"] == 507 and body["type"] == "InsufficientMemoryError"
    assert "out of memory" in body["message"] and "Traceback" not in response.text
    after = client.post("/models/oom-request/invoke", content=b"fine")
    assert after.status_code == 200 and after.json() == {"bytes": 4}


def _gone(client: httpx.Client, name: str, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get(f"/models/{name}").status_code == 404:
            return True
        time.sleep(0.2)
    return False


def test_out_of_memory_at_load_is_507_and_leaves_nothing_registered(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    first = load(client, "oom-load", models["oom-load"])
    assert first.status_code == 507, first.text
    # MMS 1.1.11 keeps a model whose load answered 507 registered without workers;
    # scorer removes it, so SageMaker's retry after freeing memory is a load, not a 409.
    assert _gone(client, "oom-load")
    assert load(client, "oom-load", models["oom-load"]).status_code == 507
    assert _gone(client, "oom-load")
    ok = client.post(
        "/models/creative-a/invoke", content=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    assert ok.status_code == 200


def test_model_url_outside_models_root_is_refused(client: httpx.Client, tmp_path: Path) -> None:
    outside = creative_model_dir(tmp_path, "outside")
    response = load(client, "outside", outside)
    assert response.status_code != 200 and "Traceback" not in response.text
    assert client.get("/models/outside").status_code == 404


def test_model_url_outside_models_root_is_a_4xx_with_the_reason(
    client: httpx.Client, tmp_path: Path
) -> None:
    if external_url() is not None:  # a container cannot see the host's path: a 404 there
        pytest.skip("the server under test cannot see this test's files")
    outside = creative_model_dir(tmp_path, "outside-4xx")
    response = load(client, "outside-4xx", outside)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and body["type"] == "InvalidLoadRequestError", body
    assert "SCORER_MODELS_ROOT" in body["message"] and "Traceback" not in response.text


def test_each_model_gets_its_own_requirements(
    client: httpx.Client, models: dict[str, Path]
) -> None:
    assert load(client, "reqs-old", models["reqs-old"]).status_code == 200
    assert load(client, "reqs-new", models["reqs-new"]).status_code == 200
    old = client.post("/models/reqs-old/invoke", content=b"x").json()
    new = client.post("/models/reqs-new/invoke", content=b"x").json()
    assert old["termcolor"] == "2.3.0"
    assert new["termcolor"] == "2.4.0"
    assert ".venv" not in old["path"] and old["path"] != new["path"]
    body = json.dumps(old)
    assert "packages" in body

"""``scorer transform`` as a user runs it: the command in a subprocess, starting the real
Multi Model Server with scorer's handler, over a folder of creatives and over an S3 prefix
of JSON-lines records (moto in server mode, reached through ``AWS_ENDPOINT_URL_S3``).

* a folder of JPEGs (one in a subfolder) and a corrupt one, from a model archive: one
  ``<name>.out`` per good image, holding what a single invocation of the same model
  answers for it; none for the corrupt image, which is named with its reason; exit 1;
* an S3 prefix of JSON-lines files split by ``Line`` and sent ``MultiRecord`` in requests
  of at most 1 MB: one ``.out`` per file (subfolders kept), one line per record, in order,
  the records spread over several requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest

from scorer.models.archive import pack_directory
from tests.support.models import add_code, creative_model_dir, image_bytes
from tests.support.s3 import FAKE_AWS, moto_server
from tests.support.servers import external_url, running_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

K = TypeVar("K")
IMAGES = {"a.jpg": 1, "b.jpg": 2, "sub/c.jpg": 3}
BROKEN = "broken.jpg"
BUCKET = "transform-jobs"
RECORDS = 3000
PADDING = "p" * 700  # 3000 records of about 730 bytes: over 2 MB, so at least 3 requests

# One JSON line out per JSON line in; "batch" says how many records the request held.
JSONL_SCRIPT = """
import json

def input_fn(body, content_type, context):
    assert content_type == "application/jsonlines", content_type
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

def predict_fn(records, model):
    return [{"id": r["id"], "double": r["x"] * 2, "batch": len(records)} for r in records]

def output_fn(prediction, accept, context):
    return "".join(json.dumps(p) + "\\n" for p in prediction), "application/jsonlines"
"""


def _scorer() -> str:
    candidate = Path(sys.executable).parent / "scorer"
    return str(candidate) if candidate.exists() else "scorer"


def transform(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_scorer(), "transform", *args],
        env={**os.environ, "SCORER_THREADS_PER_WORKER": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=540,
    )


def single_invocation_answers(
    run_dir: Path, model_dir: Path, bodies: Mapping[K, bytes]
) -> dict[K, Any]:
    """Each JPEG body's JSON answer from one ``/invocations`` of its own, on a single-model
    server of ``model_dir``: what a transform job's records must get."""
    with (
        running_server(
            run_dir, {"SAGEMAKER_MULTI_MODEL": "false", "SCORER_MODEL_DIR": str(model_dir)}
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        return {
            key: client.post(
                "/invocations", content=body,
                headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
            ).json()
            for key, body in bodies.items()
        }  # fmt: skip


@pytest.fixture(scope="module")
def image_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if external_url() is not None:
        pytest.skip("starts its own model servers")
    build = tmp_path_factory.mktemp("build")
    model_dir = creative_model_dir(build, "creative", heads=("appeal", "clarity"))
    archive = build / "model.tar.gz"
    pack_directory(model_dir, archive)
    inputs = tmp_path_factory.mktemp("creatives")
    for name, seed in IMAGES.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(image_bytes("JPEG", seed=seed))
    (inputs / BROKEN).write_bytes(image_bytes("JPEG", seed=9)[:200])  # cut short: corrupt
    output = tmp_path_factory.mktemp("scores")
    run = transform(
        ["--model-dir", str(archive), "--input", str(inputs), "--output", str(output),
         "--content-type", "image/jpeg", "--accept", "application/json"]
    )  # fmt: skip
    single = single_invocation_answers(
        tmp_path_factory.mktemp("run"),
        model_dir,
        {name: (inputs / name).read_bytes() for name in IMAGES},
    )
    return {"run": run, "output": output, "single": single}


def test_each_image_gets_an_out_with_the_single_invocation_scores(
    image_job: dict[str, Any],
) -> None:
    output: Path = image_job["output"]
    written = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert written == sorted(f"{name}.out" for name in IMAGES)
    for name, expected in image_job["single"].items():
        scores = json.loads((output / f"{name}.out").read_bytes())
        assert scores == expected
        assert set(scores["scores"][0]) == {"appeal", "clarity"}


def test_a_corrupt_image_fails_its_file_only_and_the_job_exits_non_zero(
    image_job: dict[str, Any],
) -> None:
    run: subprocess.CompletedProcess[str] = image_job["run"]
    assert run.returncode == 1, run.stderr[-3000:]
    assert not (image_job["output"] / f"{BROKEN}.out").exists()
    failed = [line for line in run.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {BROKEN}: HTTP 400"), run.stderr
    assert "3 of 4 input(s) transformed" in run.stderr


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_server() as url:
        yield {**FAKE_AWS, "AWS_ENDPOINT_URL_S3": url}


def _s3(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def test_json_lines_from_s3_split_by_line_with_multi_record(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    if external_url() is not None:
        pytest.skip("starts its own model server")
    s3 = _s3(s3_env)
    s3.create_bucket(Bucket=BUCKET)
    lines = "".join(json.dumps({"id": i, "x": i, "pad": PADDING}) + "\n" for i in range(RECORDS))
    s3.put_object(Bucket=BUCKET, Key="jobs/in/records.jsonl", Body=lines.encode())
    s3.put_object(Bucket=BUCKET, Key="jobs/in/more/few.jsonl", Body=b'{"id": 7, "x": 5}\n')
    model_dir = add_code(creative_model_dir(tmp_path, "lines", heads=("appeal",)), JSONL_SCRIPT)
    run = transform(
        ["--model-dir", str(model_dir), "--input", f"s3://{BUCKET}/jobs/in/",
         "--output", f"s3://{BUCKET}/jobs/out/", "--split-type", "Line",
         "--batch-strategy", "MultiRecord", "--max-payload-mb", "1", "--assemble-with", "Line",
         "--content-type", "application/jsonlines", "--accept", "application/jsonlines"],
        s3_env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/out/")["Contents"]
    assert sorted(item["Key"] for item in listed) == [
        "jobs/out/more/few.jsonl.out",
        "jobs/out/records.jsonl.out",
    ]
    body = s3.get_object(Bucket=BUCKET, Key="jobs/out/records.jsonl.out")["Body"].read()
    answers = [json.loads(line) for line in body.decode().splitlines()]
    assert [a["id"] for a in answers] == list(range(RECORDS))
    assert all(a["double"] == 2 * a["id"] for a in answers)
    batch_sizes = []
    index = 0
    while index < len(answers):  # consecutive records of one request share its "batch"
        batch_sizes.append(answers[index]["batch"])
        index += answers[index]["batch"]
    assert sum(batch_sizes) == RECORDS and len(batch_sizes) >= 3
    sent = lines.splitlines(keepends=True)
    first = 0
    for size in batch_sizes:  # each request within MaxPayloadInMB, the next record not
        request = sum(len(line) for line in sent[first : first + size])
        assert request <= 1024 * 1024
        if first + size < RECORDS:
            assert request + len(sent[first + size]) > 1024 * 1024
        first += size
    few = s3.get_object(Bucket=BUCKET, Key="jobs/out/more/few.jsonl.out")["Body"].read()
    assert json.loads(few) == {"id": 7, "double": 10, "batch": 1}
    assert "2 of 2 input(s) transformed (3001 records" in run.stderr

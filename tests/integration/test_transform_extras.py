"""``scorer transform``'s RecordIO splitting, gzip inputs and DataProcessing, as a user runs
them (the command in a subprocess, the real Multi Model Server with scorer's handler):

* gzip-compressed MXNet RecordIO files of JPEG records, ``SingleRecord``, ``AssembleWith
  Line``, from a model archive: one JSON line per record, in record order, each what a
  single invocation answers for that image; a file that is not gzip, and one that expands
  past ``--max-decompressed-mb``, fail alone (exit 1);
* JSON lines with ``InputFilter``, ``JoinSource Input`` and ``OutputFilter`` in
  ``MultiRecord`` batches: the model sees only the filtered fields, the output holds the
  kept input field joined with the model's answer, in order;
* a filter on records that are neither JSON nor CSV is refused before anything starts.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scorer.local import recordio
from scorer.models.archive import pack_directory
from tests.integration.test_transform import (
    JSONL_SCRIPT,
    single_invocation_answers,
    transform,
)
from tests.support.models import add_code, creative_model_dir, image_bytes
from tests.support.servers import external_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PACKS = {"campaign-a.rec.gz": (21, 22, 23), "sub/campaign-b.rec.gz": (24, 25)}
NOT_GZIP = "plain.rec.gz"
BOMB = "bomb.rec.gz"


@pytest.fixture(scope="module")
def recordio_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if external_url() is not None:
        pytest.skip("starts its own model servers")
    build = tmp_path_factory.mktemp("build")
    model_dir = creative_model_dir(build, "creative", heads=("appeal", "clarity"))
    archive = build / "model.tar.gz"
    pack_directory(model_dir, archive)
    inputs = tmp_path_factory.mktemp("packs")
    images = {seed: image_bytes("JPEG", seed=seed) for seeds in PACKS.values() for seed in seeds}
    for name, seeds in PACKS.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        framed = b"".join(recordio.encode(images[seed]) for seed in seeds)
        (inputs / name).write_bytes(gzip.compress(framed))
    (inputs / NOT_GZIP).write_bytes(recordio.encode(images[21]))  # RecordIO, not gzipped
    (inputs / BOMB).write_bytes(gzip.compress(bytes(3 * 1024 * 1024)))  # 3 MiB in 3 KiB
    output = tmp_path_factory.mktemp("scores")
    run = transform(
        ["--model-dir", str(archive), "--input", str(inputs), "--output", str(output),
         "--content-type", "image/jpeg", "--accept", "application/json",
         "--split-type", "RecordIO", "--compression-type", "Gzip",
         "--max-decompressed-mb", "2",
         "--batch-strategy", "SingleRecord", "--assemble-with", "Line"]
    )  # fmt: skip
    single = single_invocation_answers(tmp_path_factory.mktemp("run"), model_dir, images)
    return {"run": run, "output": output, "single": single}


def test_each_recordio_record_is_scored_in_order_as_a_single_invocation(
    recordio_job: dict[str, Any],
) -> None:
    output: Path = recordio_job["output"]
    written = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert written == sorted(f"{name}.out" for name in PACKS)
    for name, seeds in PACKS.items():
        lines = (output / f"{name}.out").read_text().splitlines()
        assert [json.loads(line) for line in lines] == [
            recordio_job["single"][seed] for seed in seeds
        ]
    assert recordio_job["single"][21] != recordio_job["single"][22]  # the order is visible


def test_an_input_that_is_not_gzip_or_expands_too_far_fails_alone(
    recordio_job: dict[str, Any],
) -> None:
    run: subprocess.CompletedProcess[str] = recordio_job["run"]
    assert run.returncode == 1, run.stderr[-3000:]
    failed = sorted(line for line in run.stderr.splitlines() if line.startswith("FAILED"))
    assert len(failed) == 2, run.stderr
    assert failed[0].startswith(
        f"FAILED {BOMB}: the object expands to more than {2 * 1024 * 1024} bytes"
    )
    assert failed[1].startswith(f"FAILED {NOT_GZIP}: not a gzip object (CompressionType Gzip)")
    assert "2 of 4 input(s) transformed (5 records, 5 requests)" in run.stderr
    assert not (recordio_job["output"] / f"{NOT_GZIP}.out").exists()
    assert not (recordio_job["output"] / f"{BOMB}.out").exists()


def test_json_lines_filtered_joined_and_filtered_again(tmp_path: Path) -> None:
    if external_url() is not None:
        pytest.skip("starts its own model server")
    model_dir = add_code(creative_model_dir(tmp_path, "lines", heads=("appeal",)), JSONL_SCRIPT)
    inputs = tmp_path / "in"
    inputs.mkdir()
    records = [{"id": i, "x": i + 1, "label": f"L{i}", "secret": "x" * 50} for i in range(40)]
    (inputs / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    output = tmp_path / "out"
    run = transform(
        ["--model-dir", str(model_dir), "--input", str(inputs), "--output", str(output),
         "--content-type", "application/jsonlines", "--accept", "application/jsonlines",
         "--split-type", "Line", "--batch-strategy", "MultiRecord", "--assemble-with", "Line",
         "--input-filter", "$['id','x']", "--join-source", "Input",
         "--output-filter", "$['label','SageMakerOutput']"]
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (output / "records.jsonl.out").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"label": f"L{i}", "SageMakerOutput": {"id": i, "double": 2 * (i + 1), "batch": 40}}
        for i in range(40)
    ]  # one request of 40 filtered records (no "secret" sent), joined, filtered
    assert "1 of 1 input(s) transformed (40 records, 1 requests)" in run.stderr


def test_filters_on_records_that_are_not_json_or_csv_are_refused(tmp_path: Path) -> None:
    run = transform(
        ["--model-dir", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path),
         "--content-type", "image/jpeg", "--input-filter", "$.features"]
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith("error: --input-filter and --join-source Input need records")
    assert "Traceback" not in run.stderr

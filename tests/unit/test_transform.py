"""scorer.local.transform without a model server: records, mini-batches, assembly, the
settings a job runs with, and a job over a folder with a fake model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from scorer.errors import ConfigError
from scorer.local import recordio
from scorer.local.transform import (
    ExecutionSettings,
    FolderStore,
    TransformError,
    TransformJob,
    assemble,
    mini_batches,
    process_files,
    resolve_settings,
    split_records,
    transform_file,
)

SETTINGS = ExecutionSettings("MULTI_RECORD", 6, 1)


def test_line_split_drops_cr_and_blank_lines() -> None:
    assert split_records(b'{"a":1}\r\n\n{"a":2}\n', "Line") == [b'{"a":1}', b'{"a":2}']
    assert split_records(b"a\nb", "None") == [b"a\nb"]


def test_single_record_is_one_request_per_record() -> None:
    batches = list(mini_batches([b"a", b"bb", b"c"], "Line", "SINGLE_RECORD", 0))
    assert batches == [(0, 0, b"a"), (1, 1, b"bb"), (2, 2, b"c")]


def test_multi_record_packs_newline_terminated_records_up_to_the_limit() -> None:
    records = [b"aaa", b"bbb", b"ccc", b"d"]  # 4, 4, 4, 2 bytes with their newlines
    batches = list(mini_batches(records, "Line", "MULTI_RECORD", 8))
    assert batches == [(0, 1, b"aaa\nbbb\n"), (2, 3, b"ccc\nd\n")]
    assert list(mini_batches(records, "Line", "MULTI_RECORD", 0)) == [(0, 3, b"aaa\nbbb\nccc\nd\n")]


def test_a_record_over_the_limit_fails() -> None:
    with pytest.raises(TransformError, match="record 2 is 6 bytes"):
        list(mini_batches([b"a", b"bbbbb"], "Line", "MULTI_RECORD", 4))
    with pytest.raises(TransformError, match="the object is 5 bytes"):
        list(mini_batches([b"bbbbb"], "None", "MULTI_RECORD", 4))


def test_assemble_with_line_ends_each_answer_with_one_newline() -> None:
    assert assemble([b"1", b"2\n"], "Line") == b"1\n2\n"
    assert assemble([b"1", b"2\n"], "None") == b"12\n"


def test_settings_come_from_the_job_then_execution_parameters_then_defaults(
    tmp_path: Path,
) -> None:
    job = TransformJob(model=tmp_path, input="in", output="out")
    answer = {"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 3}
    assert resolve_settings(job, answer) == ExecutionSettings("SINGLE_RECORD", 2, 3)
    assert resolve_settings(job, {"BatchStrategy": "SingleRecord"}).batch_strategy == (
        "SINGLE_RECORD"
    )
    assert resolve_settings(job, None) == ExecutionSettings("MULTI_RECORD", 6, 1)
    given = TransformJob(
        model=tmp_path, input="in", output="out", batch_strategy="MultiRecord",
        split_type="Line", max_payload_mb=1, max_concurrent=4,
    )  # fmt: skip
    assert resolve_settings(given, answer) == ExecutionSettings("MULTI_RECORD", 1, 4)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"batch_strategy": "MultiRecord"}, "needs --split-type Line or RecordIO"),
        ({"split_type": "Lines"}, "None, Line or RecordIO"),
        ({"split_type": "TFRecord"}, "TFRecord is not emulated"),
        ({"compression_type": "Zip"}, "None or Gzip"),
        ({"join_source": "Output"}, "None or Input"),
        ({"input_filter": "$.features", "content_type": "image/jpeg"}, "JSON or CSV"),
        ({"join_source": "Input"}, "JSON or CSV"),
        (
            {"output_filter": "$[1]", "content_type": "image/jpeg", "accept": "image/png"},
            "--output-filter needs answers in JSON or CSV",
        ),
        ({"input_filter": "$[[", "content_type": "application/json"}, "not a JSONPath"),
        ({"input_filter": "features", "content_type": "application/json"}, "starts with \\$"),
        ({"input_filter": "$." + "a" * 62, "content_type": "text/csv"}, "at most 63"),
        ({"input_filter": "$[1:]", "content_type": "text/csv"}, "need --split-type Line"),
        ({"max_payload_mb": 101}, "0 to 100"),
        ({"max_payload_mb": 20, "max_concurrent": 6}, "at most 100"),
        ({"model": Path("no-such-model")}, "neither a model directory"),
    ],
)
def test_jobs_that_cannot_run(tmp_path: Path, changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TransformJob(**{"model": tmp_path, "input": "in", "output": "out", **changes})


def fake_model(body: bytes) -> bytes:
    """One JSON line per input line; 'bad' is a 400 as the model server answers it."""
    if b"bad" in body:
        raise TransformError('HTTP 400: {"type": "BadRequestError"}')
    return b"".join(
        json.dumps({"n": int(line)}).encode() + b"\n" for line in body.splitlines() if line
    )


def test_a_failing_file_gets_no_out_and_the_others_go_on(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "a.jsonl").write_text("1\n2\n3\n")
    (source / "sub" / "b.jsonl").write_text("4\nbad\n6\n")
    (source / ".hidden").write_text("7\n")
    (source / "c.jsonl").write_text("8\n")
    out = tmp_path / "out"
    job = TransformJob(
        model=tmp_path, input=str(source), output=str(out), split_type="Line",
        batch_strategy="SingleRecord", assemble_with="Line",
    )  # fmt: skip
    seen: list[tuple[str, str | None]] = []
    report = process_files(
        FolderStore(source).names(),
        FolderStore(source),
        FolderStore(out),
        job,
        ExecutionSettings("SINGLE_RECORD", 6, 2),
        fake_model,
        lambda name, error: seen.append((name, error)),
    )
    assert report.written == ["a.jsonl.out", "c.jsonl.out"]
    assert list(report.failed) == ["sub/b.jsonl"]
    assert report.failed["sub/b.jsonl"].startswith("record 2: HTTP 400")
    assert (out / "a.jsonl.out").read_text() == '{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    assert not (out / "sub").exists()
    assert sorted(name for name, _ in seen) == ["a.jsonl", "c.jsonl", "sub/b.jsonl"]
    assert (report.records, report.requests) == (4, 4)


def test_gzip_inputs_are_decompressed_before_splitting(tmp_path: Path) -> None:
    job = TransformJob(
        model=tmp_path, input="in", output="out", split_type="Line", compression_type="Gzip"
    )
    data = gzip.compress(b"1\n2\n") + gzip.compress(b"3\n")  # two members, as `cat a.gz b.gz`
    out, records, requests = transform_file("a.gz", data, job, SETTINGS, fake_model)
    assert (records, requests) == (3, 1)
    assert [json.loads(line)["n"] for line in out.splitlines()] == [1, 2, 3]
    with pytest.raises(TransformError, match="not a gzip object"):
        transform_file("b.gz", b"1\n2\n", job, SETTINGS, fake_model)


def test_a_gzip_object_that_expands_past_the_limit_fails_its_file_without_inflating_it_all(
    tmp_path: Path,
) -> None:
    """A gzip bomb (a few KiB that inflate to far more) fails its file with a message that
    names the limit; what fits the limit, and a second member, still decompress."""
    job = TransformJob(
        model=tmp_path,
        input="in",
        output="out",
        split_type="Line",
        compression_type="Gzip",
        max_decompressed_mb=1,
    )
    bomb = gzip.compress(b"1\n" * (8 * 1024 * 1024))  # 16 MiB of records, about 16 KiB gzip
    assert len(bomb) < 64 * 1024
    with pytest.raises(TransformError, match=r"more than 1048576 bytes .*--max-decompressed-mb"):
        transform_file("bomb.gz", bomb, job, SETTINGS, fake_model)
    fits = gzip.compress(b"1\n" * 200_000) + gzip.compress(b"2\n" * 200_000)  # 800,000 bytes
    _, records, _ = transform_file("fits.gz", fits, job, SETTINGS, fake_model)
    assert records == 400_000
    over = gzip.compress(b"1\n" * 300_000) + gzip.compress(b"2\n" * 300_000)  # the 2nd passes it
    with pytest.raises(TransformError, match="more than 1048576 bytes"):
        transform_file("over.gz", over, job, SETTINGS, fake_model)
    with pytest.raises(TransformError, match="not a gzip object"):
        transform_file("cut.gz", fits[: len(fits) // 3], job, SETTINGS, fake_model)


def test_max_decompressed_mb_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--max-decompressed-mb must be at least 1"):
        TransformJob(model=tmp_path, input="in", output="out", max_decompressed_mb=0)


def test_recordio_single_record_sends_each_records_data_multi_record_the_framing(
    tmp_path: Path,
) -> None:
    payloads = [b"first", b"2nd record", b"x" * 9]
    data = b"".join(recordio.encode(p) for p in payloads)
    sent: list[bytes] = []

    def echo(body: bytes) -> bytes:
        sent.append(body)
        return b"%d;" % len(body)

    single = TransformJob(
        model=tmp_path, input="in", output="out", split_type="RecordIO",
        batch_strategy="SingleRecord",
    )  # fmt: skip
    out, records, _ = transform_file("r.rec", data, single, resolve_settings(single, None), echo)
    assert sent == payloads and records == 3 and out == b"5;10;9;"
    sent.clear()
    multi = TransformJob(
        model=tmp_path, input="in", output="out", split_type="RecordIO",
        batch_strategy="MultiRecord", assemble_with="Line",
    )  # fmt: skip
    out, _, requests = transform_file("r.rec", data, multi, resolve_settings(multi, None), echo)
    assert sent == [data] and requests == 1 and out == b"%d;\n" % len(data)
    with pytest.raises(TransformError, match="not RecordIO: no RecordIO magic number"):
        transform_file("r.rec", b"not recordio at all", single, SETTINGS, echo)
    assert len(sent) == 1  # nothing sent for the bad object


def test_join_and_filters_on_json_lines_in_multi_record_batches(tmp_path: Path) -> None:
    job = TransformJob(
        model=tmp_path, input="in", output="out", split_type="Line",
        batch_strategy="MultiRecord", content_type="application/jsonlines",
        accept="application/jsonlines", assemble_with="Line",
        input_filter="$.n", join_source="Input", output_filter="$['id','SageMakerOutput']",
    )  # fmt: skip
    data = b'{"id": "a", "n": 1, "noise": 0}\n{"id": "b", "n": 2, "noise": 0}\n'
    out, _, _ = transform_file("j.jsonl", data, job, SETTINGS, fake_model)
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": "a", "SageMakerOutput": {"n": 1}},
        {"id": "b", "SageMakerOutput": {"n": 2}},
    ]


def test_join_on_csv_appends_the_answer_and_a_bad_index_fails_the_file(tmp_path: Path) -> None:
    job = TransformJob(
        model=tmp_path, input="in", output="out", split_type="Line",
        batch_strategy="SingleRecord", content_type="text/csv", assemble_with="Line",
        input_filter="$[1]", join_source="Input", output_filter="$[0,-1]",
    )  # fmt: skip
    settings = resolve_settings(job, None)
    out, _, _ = transform_file("c.csv", b"id1,7\nid2,8\n", job, settings, fake_model)
    assert out == b'id1,"{""n"":7}"\nid2,"{""n"":8}"\n'
    with pytest.raises(TransformError, match=r"record 2: InputFilter: \$\[1\]: index 1"):
        transform_file("c.csv", b"id1,7\nid2\n", job, settings, fake_model)


def test_a_join_needs_one_answer_line_per_record(tmp_path: Path) -> None:
    job = TransformJob(
        model=tmp_path, input="in", output="out", split_type="Line",
        batch_strategy="MultiRecord", content_type="application/jsonlines",
        join_source="Input",
    )  # fmt: skip
    with pytest.raises(TransformError, match="records 1-2: the model answered 1 line"):
        transform_file("j.jsonl", b"1\n2\n", job, SETTINGS, lambda _body: b"[1, 2]")

"""The emulator's hosting options without a model server: data capture records written to
a real directory, the settings serverless and inference components refuse at start, and
the ``scorer local`` command's message for a bad serverless memory size."""

from __future__ import annotations

import base64
import datetime
import json
import re
import uuid
from pathlib import Path

import pytest

from scorer.cache import CacheSettings
from scorer.cli import main
from scorer.errors import ConfigError
from scorer.local.capture import DirectorySink, open_capture
from scorer.local.runner import LocalEndpoint, parse_components
from scorer.local.serverless import ConcurrencyLimit
from scorer.local.settings import LocalSettings

_FILE = re.compile(
    r"^capture-ep/AllTraffic/\d{4}/\d\d/\d\d/\d\d/\d\d-\d\d-\d{3}-[0-9a-f-]{36}\.jsonl$"
)


def _records(root: Path) -> tuple[list[Path], list[dict[str, object]]]:
    files = sorted(root.rglob("*.jsonl"))
    lines = [line for path in files for line in path.read_text().splitlines()]
    return files, [json.loads(line) for line in lines]


def test_capture_records_have_sagemakers_shape_and_round_trip_binary(tmp_path: Path) -> None:
    capture = open_capture(
        str(tmp_path), "capture-ep", "AllTraffic", json_types=("application/json",)
    )
    image = bytes(range(256)) * 3  # not UTF-8
    answer = b'{"scores": [{"appeal": 0.25}]}'
    assert capture.offer(image, "image/jpeg", answer, "application/json", "creative-7")
    assert capture.offer(b"1,2,3", "text/csv", b"0.5", "text/csv; charset=utf-8")
    capture.close()
    files, records = _records(tmp_path)
    assert len(files) == 1
    assert _FILE.match(files[0].relative_to(tmp_path).as_posix())
    first, second = records
    assert first["eventVersion"] == "0"
    meta = first["eventMetadata"]
    assert isinstance(meta, dict)
    assert meta["inferenceId"] == "creative-7"
    assert uuid.UUID(meta["eventId"]).version == 4
    at = datetime.datetime.strptime(meta["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert files[0].parent.relative_to(tmp_path / "capture-ep/AllTraffic").as_posix() == (
        at.strftime("%Y/%m/%d/%H")
    )
    data = first["captureData"]
    assert isinstance(data, dict)
    assert data["endpointInput"] == {
        "observedContentType": "image/jpeg",
        "mode": "INPUT",
        "data": base64.b64encode(image).decode(),
        "encoding": "BASE64",
    }
    assert base64.b64decode(data["endpointInput"]["data"]) == image
    assert data["endpointOutput"] == {
        "observedContentType": "application/json",
        "mode": "OUTPUT",
        "data": answer.decode(),
        "encoding": "JSON",
    }
    # no CSV types declared: CSV is base64 too; no inference id: none in the record
    second_data = second["captureData"]
    assert isinstance(second_data, dict)
    assert second_data["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(second_data["endpointInput"]["data"]) == b"1,2,3"
    assert "inferenceId" not in second["eventMetadata"]  # type: ignore[operator]
    assert second["eventMetadata"]["eventId"] != meta["eventId"]  # type: ignore[index]


def test_capture_csv_types_match_without_parameters_and_bad_text_stays_base64(
    tmp_path: Path,
) -> None:
    capture = open_capture(
        str(tmp_path),
        "capture-ep",
        "AllTraffic",
        csv_types=("text/csv",),
        json_types=("application/json",),
    )
    capture.offer(b"1,2,3", "text/csv", b"\xff\xfe", "application/json; charset=utf-8")
    capture.close()
    (record,) = _records(tmp_path)[1]
    data = record["captureData"]
    assert isinstance(data, dict)
    assert data["endpointInput"]["encoding"] == "CSV"
    assert data["endpointInput"]["data"] == "1,2,3"
    assert data["endpointOutput"]["encoding"] == "BASE64"
    assert base64.b64decode(data["endpointOutput"]["data"]) == b"\xff\xfe"


def test_capture_percent_zero_writes_nothing(tmp_path: Path) -> None:
    capture = open_capture(str(tmp_path), "capture-ep", "AllTraffic", percent=0)
    assert not any(capture.offer(b"x", "text/plain", b"y", "text/plain") for _ in range(200))
    capture.close()
    assert list(tmp_path.rglob("*")) == []


def test_capture_percent_samples_some(tmp_path: Path) -> None:
    capture = open_capture(str(tmp_path), "capture-ep", "AllTraffic", percent=50)
    kept = sum(capture.offer(b"x", "text/plain", b"y", "text/plain") for _ in range(400))
    capture.close()
    assert 0 < kept < 400
    assert len(_records(tmp_path)[1]) == kept


def test_one_file_per_hour_folder(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    at = datetime.datetime(2026, 11, 30, 22, 5, 7, 123000, tzinfo=datetime.UTC)
    sink.write("ep/AllTraffic/2026/11/30/22", at, ["{}"])
    sink.write("ep/AllTraffic/2026/11/30/22", at, ["{}"])
    sink.write("ep/AllTraffic/2026/11/30/23", at, ["{}"])
    files = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.jsonl"))
    assert len(files) == 2
    assert files[0].startswith("ep/AllTraffic/2026/11/30/22/05-07-123-")
    assert (tmp_path / files[0]).read_text() == "{}\n{}\n"


def _single(tmp_path: Path, **values: object) -> LocalSettings:
    return LocalSettings(model_dir=tmp_path, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory", [0, 512, 1000, 1536, 7168, 8192])
def test_serverless_memory_outside_1024_steps_is_refused(tmp_path: Path, memory: int) -> None:
    with pytest.raises(ConfigError, match=rf"must be one of 1024, .*6144; got {memory}"):
        _single(tmp_path, serverless_memory_mb=memory)


@pytest.mark.parametrize("memory", [1024, 3072, 6144])
def test_serverless_memory_steps_are_accepted(tmp_path: Path, memory: int) -> None:
    settings = _single(tmp_path, serverless_memory_mb=memory)
    assert settings.serverless and settings.payload_limit == 4 * 1024 * 1024
    environ = LocalEndpoint(settings, {"SCORER_DEVICE": "cuda"}).environ
    assert environ["SCORER_DEVICE"] == "cpu"
    assert environ["SCORER_WORKER_MEMORY_LIMIT_MB"] == str(memory)


@pytest.mark.parametrize("concurrency", [0, 201])
def test_serverless_concurrency_out_of_range(tmp_path: Path, concurrency: int) -> None:
    with pytest.raises(ConfigError, match="--serverless-max-concurrency must be 1 to 200"):
        _single(tmp_path, serverless_max_concurrency=concurrency)


def test_serverless_refuses_what_sagemaker_does_not_support(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"multi-model endpoint .*give --model-dir"):
        LocalSettings(cache=CacheSettings(model_prefix=str(tmp_path)), serverless_max_concurrency=2)
    with pytest.raises(ConfigError, match=r"data capture .*drop --data-capture"):
        _single(tmp_path, serverless_memory_mb=2048, data_capture=str(tmp_path))
    with pytest.raises(ConfigError, match="asynchronous inference"):
        _single(tmp_path, serverless_memory_mb=2048, async_output_path="s3://bucket/out/")


def test_a_real_time_endpoint_keeps_the_6_mb_limit(tmp_path: Path) -> None:
    settings = _single(tmp_path)
    assert not settings.serverless and settings.payload_limit == 6 * 1024 * 1024


def test_cli_names_the_bad_memory_size_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["local", "--model-dir", str(tmp_path), "--serverless-memory-mb", "1000"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: --serverless-memory-mb must be one of 1024, 2048" in err
    assert "Traceback" not in err


def test_cli_refuses_serverless_multi_model_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["local", "--model-prefix", str(tmp_path), "--serverless-max-concurrency", "2"])
    assert code == 2
    assert "give --model-dir, not --model-prefix" in capsys.readouterr().err


def test_inference_components_need_a_prefix_and_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--inference-component needs --model-prefix"):
        _single(tmp_path, inference_components={"a": "a.tar.gz"})
    prefix = CacheSettings(model_prefix=str(tmp_path))
    with pytest.raises(ConfigError, match="not a valid inference component name"):
        LocalSettings(cache=prefix, inference_components={"bad_name": "a.tar.gz"})
    assert parse_components(["scorer=creative-v3.tar.gz", "echo", "fr = market/fr.tar.gz"]) == {
        "scorer": "creative-v3.tar.gz",
        "echo": "echo.tar.gz",
        "fr": "market/fr.tar.gz",
    }
    with pytest.raises(ConfigError, match="given twice"):
        parse_components(["a=x.tar.gz", "a=y.tar.gz"])
    with pytest.raises(ConfigError, match="NAME=ARCHIVE"):
        parse_components(["a="])


def test_capture_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data-capture must be a directory or an s3"):
        _single(tmp_path, data_capture="s3://")
    with pytest.raises(ConfigError, match="--capture-json-content-type needs --data-capture"):
        _single(tmp_path, capture_json_content_types=("application/json",))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--data-capture must be a directory, not the file"):
        _single(tmp_path, data_capture=str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="--data-capture-percent must be 0 to 100"):
        _single(tmp_path, data_capture=str(tmp_path), data_capture_percent=101)


def test_concurrency_limit_refuses_one_more_and_frees_its_slot() -> None:
    limit = ConcurrencyLimit(1)
    with limit.slot():
        with pytest.raises(Exception) as refused, limit.slot():
            pass
        assert getattr(refused.value, "code", None) == "ThrottlingException"
        assert getattr(refused.value, "status_code", None) == 429
    with limit.slot():
        assert limit.in_flight == 1
    assert limit.in_flight == 0

"""scorer.modelserver: the MMS properties, command line and environment (pure functions only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorer.config import ServerConfig, load_config
from scorer.errors import ConfigError
from scorer.modelserver import properties as mms
from scorer.modelserver.process import command, environment
from scorer.modelserver.properties import (
    BACKSTOP_MARGIN_SECONDS,
    properties,
    worker_count,
    write_properties,
)


def config(tmp_path: Path, **env: str) -> ServerConfig:
    return load_config({"SCORER_RUN_DIR": str(tmp_path / "run"), **env})


def test_single_model_properties(tmp_path: Path) -> None:
    props = properties(config(tmp_path, SCORER_MODEL_DIR="/srv/model"))
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["management_address"] == "http://0.0.0.0:8080"
    assert props["model_store"] == "/"
    assert props["default_service_handler"] == "scorer.serving.handler_service:handle"
    assert props["load_models"] == "model=/srv/model"
    assert props["scorer_max_batch_size"] == "8"
    assert props["scorer_max_batch_delay_ms"] == "5"
    assert props["scorer_multi_model"] == "false"
    assert props["default_workers_per_model"] == "1"
    assert props["decode_input_request"] == "false"
    assert props["preload_model"] == "false"
    assert props["enable_envvars_config"] == "true"


def test_multi_model_has_no_load_models(tmp_path: Path) -> None:
    props = properties(config(tmp_path, SAGEMAKER_MULTI_MODEL="true"))
    assert "load_models" not in props
    assert props["scorer_multi_model"] == "true"


def test_timeout_is_written_in_seconds_not_minutes(tmp_path: Path) -> None:
    # MMS's one reply timeout (loads and requests alike) is only a backstop behind the
    # worker's own bounds: the larger of the two plus a margin, in seconds.
    props = properties(config(tmp_path, SAGEMAKER_MODEL_SERVER_TIMEOUT="900"))
    assert props["default_response_timeout_seconds"] == str(900 + BACKSTOP_MARGIN_SECONDS)
    assert "default_response_timeout" not in props  # MMS reads that one as minutes
    props = properties(config(tmp_path, SAGEMAKER_MODEL_SERVER_TIMEOUT="2"))
    assert props["default_response_timeout_seconds"] == str(300 + BACKSTOP_MARGIN_SECONDS)
    props = properties(config(tmp_path, SCORER_MODEL_LOAD_TIMEOUT="20"))
    assert props["default_response_timeout_seconds"] == str(60 + BACKSTOP_MARGIN_SECONDS)


def test_port_and_bind_address(tmp_path: Path) -> None:
    props = properties(config(tmp_path, SAGEMAKER_BIND_TO_PORT="9123"), bind_address="127.0.0.1")
    assert props["inference_address"] == "http://127.0.0.1:9123"
    assert props["management_address"] == "http://127.0.0.1:9123"


@pytest.mark.parametrize(
    ("env", "request_size", "response_size"),
    [
        ({}, "6291456", "6291456"),
        ({"SAGEMAKER_MAX_REQUEST_SIZE": "1000"}, "1000", "6291456"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"}, "104857600", "104857600"),
    ],
)
def test_request_and_response_size_limits(
    tmp_path: Path, env: dict[str, str], request_size: str, response_size: str
) -> None:
    props = properties(config(tmp_path, **env))
    assert props["max_request_size"] == request_size
    assert props["max_response_size"] == response_size


def test_workers_and_batch_transform_settings(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        SAGEMAKER_MODEL_SERVER_WORKERS="3",
        SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="4",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="12",
        SAGEMAKER_BATCH_STRATEGY="SINGLE_RECORD",
        SAGEMAKER_MODEL_SERVER_VMARGS="-Xmx512m",
    )
    props = properties(cfg)
    assert worker_count(cfg) == 3
    assert props["default_workers_per_model"] == "3"
    assert props["scorer_max_concurrent_transforms"] == "4"
    assert props["scorer_max_payload_in_mb"] == "12"
    assert props["scorer_batch_strategy"] == "SINGLE_RECORD"
    assert props["vmargs"] == "-Xmx512m"
    assert int(props["number_of_netty_threads"]) >= 2


def test_every_property_value_is_a_single_line_string(tmp_path: Path) -> None:
    for key, value in properties(config(tmp_path)).items():
        assert isinstance(value, str), key
        assert "\n" not in value and "\r" not in value, key


def test_write_properties_uses_the_configured_path(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "mms.properties"
    cfg = config(tmp_path, SCORER_MMS_CONFIG=str(path), SAGEMAKER_BIND_TO_PORT="9001")
    assert write_properties(cfg) == path
    lines = path.read_text().splitlines()
    assert "inference_address=http://0.0.0.0:9001" in lines
    assert "model_store=/" in lines
    assert dict(line.split("=", 1) for line in lines) == properties(cfg)


def test_command_starts_mms_in_the_foreground_with_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path, SCORER_MMS_CONFIG=str(tmp_path / "mms.properties"))
    cmd = command(cfg)
    assert Path(cmd[0]).name == "multi-model-server"
    assert cmd[1:3] == ["--start", "--foreground"]
    assert cmd[cmd.index("--mms-config") + 1] == str(tmp_path / "mms.properties")
    assert cmd[cmd.index("--model-store") + 1] == "/"


def test_environment_gives_mms_its_own_temp_and_log_dirs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    base = {"PATH": "/usr/bin", "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "0"}
    env = environment(cfg, base)
    run = tmp_path / "run"
    assert env["TEMP"] == env["TMPDIR"] == str(run / "tmp")
    assert env["LOG_LOCATION"] == env["METRICS_LOCATION"] == str(run / "logs")
    assert env["PATH"] == "/usr/bin"
    assert env["PYTHONUNBUFFERED"] == "0"  # an explicit setting is kept
    assert base == {"PATH": "/usr/bin", "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "0"}


def test_environment_defaults_to_unbuffered_output(tmp_path: Path) -> None:
    assert environment(config(tmp_path), {})["PYTHONUNBUFFERED"] == "1"


def test_two_servers_get_separate_paths(tmp_path: Path) -> None:
    a = load_config({"SCORER_RUN_DIR": str(tmp_path / "a")})
    b = load_config({"SCORER_RUN_DIR": str(tmp_path / "b")})
    assert environment(a, {})["TMPDIR"] != environment(b, {})["TMPDIR"]
    assert environment(a, {})["LOG_LOCATION"] != environment(b, {})["LOG_LOCATION"]


def test_handler_name_points_at_a_real_function() -> None:
    module_name, _, function = mms.HANDLER.partition(":")
    module = __import__(module_name, fromlist=[function])
    assert callable(getattr(module, function))


JAVA_INT_MAX = 2**31 - 1


@pytest.mark.parametrize(
    "env",
    [
        {"SAGEMAKER_MAX_REQUEST_SIZE": "3000000000"},
        {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "4096"},
        {"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "3000000000"},
    ],
)
def test_values_mms_cannot_parse_are_refused_up_front(tmp_path: Path, env: dict[str, str]) -> None:
    try:
        cfg = config(tmp_path, **env)
    except ConfigError as exc:
        assert next(iter(env)) in exc.message
        return
    props = properties(cfg)
    for key in ("max_request_size", "max_response_size", "default_response_timeout_seconds"):
        assert int(props[key]) <= JAVA_INT_MAX, key

"""scorer.config: defaults, every environment variable, and ConfigError for bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from scorer import config as cfg
from scorer.config import ServerConfig, load_config, to_environ
from scorer.errors import ConfigError, ScorerError


def test_defaults_match_sagemaker() -> None:
    config = load_config({})
    assert config.multi_model is False
    assert config.port == 8080
    assert config.safe_port_range is None
    assert config.workers is None
    assert config.timeout_seconds == 60
    assert config.load_timeout_seconds == 300
    assert config.startup_timeout_seconds == 600
    assert config.max_request_size == 6291456 == 6 * 1024 * 1024
    assert config.max_payload_in_mb == 6
    assert config.model_dir == Path("/opt/ml/model")
    assert config.models_root == Path("/opt/ml/models")
    assert config.mms_config_path == Path("/etc/sagemaker-mms.properties")
    assert config.run_dir == Path("/tmp/scorer")
    assert config.program == "inference.py"
    assert config.default_accept == "application/json"
    assert config.log_level == "INFO"
    assert config.allow_pickle is False
    assert config.device == "auto"
    assert config.threads_per_worker is None
    assert config.install_requirements is True
    assert config.pip_args == ()
    assert config.batch is False
    assert config.batch_strategy == "MULTI_RECORD"
    assert config.max_concurrent_transforms == 1
    assert config.vmargs == "-XX:-UseContainerSupport -XX:+UseG1GC"


def test_derived_paths_live_under_the_run_dir(tmp_path: Path) -> None:
    config = load_config({cfg.RUN_DIR: str(tmp_path)})
    assert config.run_dir == tmp_path
    assert config.packages_dir == tmp_path / "packages"
    assert config.mms_tmp_dir == tmp_path / "tmp"
    assert config.log_dir == tmp_path / "logs"


def test_config_is_frozen() -> None:
    config = load_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({cfg.MULTI_MODEL: "true"}, "multi_model", True),
        ({cfg.MULTI_MODEL: "TRUE"}, "multi_model", True),
        ({cfg.MULTI_MODEL: "1"}, "multi_model", True),
        ({cfg.MULTI_MODEL: " yes "}, "multi_model", True),
        ({cfg.MULTI_MODEL: "off"}, "multi_model", False),
        ({cfg.MULTI_MODEL: "0"}, "multi_model", False),
        ({cfg.MULTI_MODEL: ""}, "multi_model", False),
        ({cfg.BIND_TO_PORT: "9001"}, "port", 9001),
        ({cfg.BIND_TO_PORT: " 9002 "}, "port", 9002),
        ({cfg.BIND_TO_PORT: ""}, "port", 8080),
        ({cfg.SAFE_PORT_RANGE: "9000-9999"}, "safe_port_range", (9000, 9999)),
        ({cfg.SAFE_PORT_RANGE: " 20000 - 20010 "}, "safe_port_range", (20000, 20010)),
        ({cfg.SAFE_PORT_RANGE: "7000-7000"}, "safe_port_range", (7000, 7000)),
        ({cfg.MODEL_SERVER_WORKERS: "3"}, "workers", 3),
        ({cfg.MODEL_SERVER_TIMEOUT: "120"}, "timeout_seconds", 120),
        ({cfg.MODEL_SERVER_TIMEOUT_SECONDS: "15"}, "timeout_seconds", 15),
        ({cfg.STARTUP_TIMEOUT: "30"}, "startup_timeout_seconds", 30),
        ({cfg.MODEL_LOAD_TIMEOUT: "45"}, "load_timeout_seconds", 45),
        ({cfg.MODEL_SERVER_VMARGS: "-Xmx1g"}, "vmargs", "-Xmx1g"),
        ({cfg.PROGRAM: "serve.py"}, "program", "serve.py"),
        ({cfg.DEFAULT_INVOCATIONS_ACCEPT: "text/csv"}, "default_accept", "text/csv"),
        ({cfg.MAX_REQUEST_SIZE: "1000"}, "max_request_size", 1000),
        ({cfg.MAX_PAYLOAD_IN_MB: "2"}, "max_request_size", 2 * 1024 * 1024),
        ({cfg.MAX_PAYLOAD_IN_MB: "2"}, "max_payload_in_mb", 2),
        ({cfg.LOG_LEVEL: "DEBUG"}, "log_level", "DEBUG"),
        ({cfg.MODEL_DIR: "/srv/model"}, "model_dir", Path("/srv/model")),
        ({cfg.MODELS_ROOT: "/srv/models"}, "models_root", Path("/srv/models")),
        (
            {cfg.MMS_CONFIG_PATH: "/srv/mms.properties"},
            "mms_config_path",
            Path("/srv/mms.properties"),
        ),
        ({cfg.RUN_DIR: "/srv/run"}, "run_dir", Path("/srv/run")),
        ({cfg.ALLOW_PICKLE: "true"}, "allow_pickle", True),
        ({cfg.DEVICE: "CPU"}, "device", "cpu"),
        ({cfg.DEVICE: "cuda"}, "device", "cuda"),
        ({cfg.DEVICE: ""}, "device", "auto"),
        ({cfg.THREADS_PER_WORKER: "4"}, "threads_per_worker", 4),
        ({cfg.INSTALL_REQUIREMENTS: "false"}, "install_requirements", False),
        (
            {cfg.PIP_ARGS: "--no-index  --find-links /wheels"},
            "pip_args",
            ("--no-index", "--find-links", "/wheels"),
        ),
        ({cfg.BATCH: "true"}, "batch", True),
        ({cfg.BATCH_STRATEGY: "SINGLE_RECORD"}, "batch_strategy", "SINGLE_RECORD"),
        ({cfg.MAX_CONCURRENT_TRANSFORMS: "4"}, "max_concurrent_transforms", 4),
    ],
)
def test_each_variable_is_parsed(env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(load_config(env), field) == expected


def test_timeout_seconds_wins_over_the_toolkit_name() -> None:
    config = load_config({cfg.MODEL_SERVER_TIMEOUT: "300", cfg.MODEL_SERVER_TIMEOUT_SECONDS: "7"})
    assert config.timeout_seconds == 7


def test_blank_timeout_seconds_falls_back_to_the_toolkit_name() -> None:
    config = load_config({cfg.MODEL_SERVER_TIMEOUT: "45", cfg.MODEL_SERVER_TIMEOUT_SECONDS: " "})
    assert config.timeout_seconds == 45


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MULTI_RECORD", "MULTI_RECORD"),
        ("SINGLE_RECORD", "SINGLE_RECORD"),
        ("MultiRecord", "MULTI_RECORD"),
        ("SingleRecord", "SINGLE_RECORD"),
        (" single_record ", "SINGLE_RECORD"),
        ("", "MULTI_RECORD"),
    ],
)
def test_batch_strategy_takes_both_spellings(raw: str, expected: str) -> None:
    assert load_config({cfg.BATCH_STRATEGY: raw}).batch_strategy == expected


def test_a_transform_job_waits_600_seconds_per_call_by_default() -> None:
    assert load_config({cfg.BATCH: "true"}).timeout_seconds == 600
    assert load_config({cfg.BATCH: "false"}).timeout_seconds == 60
    assert load_config({cfg.BATCH: "true", cfg.MODEL_SERVER_TIMEOUT: "90"}).timeout_seconds == 90


def test_batch_payload_limit_sets_the_request_size() -> None:
    config = load_config({cfg.BATCH: "true", cfg.MAX_PAYLOAD_IN_MB: "20"})
    assert config.max_request_size == 20 * 1024 * 1024
    assert config.max_payload_in_mb == 20


def test_payload_of_zero_megabytes_is_chunked_without_a_limit() -> None:
    config = load_config({cfg.MAX_PAYLOAD_IN_MB: "0", cfg.MAX_CONCURRENT_TRANSFORMS: "0"})
    assert config.max_payload_in_mb == 0
    assert config.max_request_size == cfg.JAVA_INT_MAX
    assert config.max_concurrent_transforms == 1  # 0: not set
    assert load_config(to_environ(config)) == config


def test_batch_settings_round_trip() -> None:
    config = load_config(
        {
            cfg.BATCH: "true",
            cfg.BATCH_STRATEGY: "SingleRecord",
            cfg.MAX_PAYLOAD_IN_MB: "3",
            cfg.MAX_CONCURRENT_TRANSFORMS: "4",
        }
    )
    assert (config.batch, config.batch_strategy) == (True, "SINGLE_RECORD")
    assert (config.max_payload_in_mb, config.max_concurrent_transforms) == (3, 4)
    assert (config.timeout_seconds, config.max_request_size) == (600, 3 * 1024 * 1024)
    assert load_config(to_environ(config)) == config


def test_max_request_size_in_bytes_wins_over_megabytes() -> None:
    config = load_config({cfg.MAX_REQUEST_SIZE: "12345", cfg.MAX_PAYLOAD_IN_MB: "50"})
    assert config.max_request_size == 12345
    assert config.max_payload_in_mb == 50  # still reported for /execution-parameters


def test_empty_paths_fall_back_to_defaults() -> None:
    config = load_config({cfg.MODEL_DIR: "", cfg.MODELS_ROOT: "", cfg.MMS_CONFIG_PATH: ""})
    assert config.model_dir == Path("/opt/ml/model")
    assert config.models_root == Path("/opt/ml/models")
    assert config.mms_config_path == Path("/etc/sagemaker-mms.properties")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({cfg.BIND_TO_PORT: "http"}, "'http'"),
        ({cfg.BIND_TO_PORT: "0"}, ">= 1"),
        ({cfg.BIND_TO_PORT: "-5"}, ">= 1"),
        ({cfg.BIND_TO_PORT: "65536"}, "not a valid port"),
        ({cfg.MULTI_MODEL: "maybe"}, "true or false"),
        ({cfg.ALLOW_PICKLE: "please"}, "true or false"),
        ({cfg.INSTALL_REQUIREMENTS: "2"}, "true or false"),
        ({cfg.BATCH: "y"}, "true or false"),
        ({cfg.MODEL_SERVER_WORKERS: "two"}, "integer"),
        ({cfg.MODEL_SERVER_WORKERS: "0"}, ">= 1"),
        ({cfg.MODEL_SERVER_TIMEOUT: "1.5"}, "integer"),
        ({cfg.MODEL_SERVER_TIMEOUT: "0"}, ">= 1"),
        ({cfg.MODEL_SERVER_TIMEOUT_SECONDS: "soon"}, "integer"),
        ({cfg.STARTUP_TIMEOUT: "0"}, ">= 1"),
        ({cfg.MAX_REQUEST_SIZE: "6MB"}, "integer"),
        ({cfg.MAX_REQUEST_SIZE: "0"}, ">= 1"),
        ({cfg.MAX_PAYLOAD_IN_MB: "lots"}, "integer"),
        ({cfg.MAX_PAYLOAD_IN_MB: "-1"}, ">= 0"),
        ({cfg.MAX_CONCURRENT_TRANSFORMS: "-1"}, ">= 0"),
        ({cfg.BATCH_STRATEGY: "EVERYTHING"}, "MULTI_RECORD or SINGLE_RECORD"),
        ({cfg.THREADS_PER_WORKER: "0"}, ">= 1"),
        ({cfg.SAFE_PORT_RANGE: "9000"}, "XXXX-YYYY"),
        ({cfg.SAFE_PORT_RANGE: "9000-"}, "XXXX-YYYY"),
        ({cfg.SAFE_PORT_RANGE: "a-b"}, "XXXX-YYYY"),
        ({cfg.SAFE_PORT_RANGE: "1-2-3"}, "XXXX-YYYY"),
        ({cfg.SAFE_PORT_RANGE: "9999-9000"}, "not a valid port range"),
        ({cfg.SAFE_PORT_RANGE: "0-10"}, "not a valid port range"),
        ({cfg.SAFE_PORT_RANGE: "10-70000"}, "not a valid port range"),
        ({cfg.DEVICE: "gpu"}, "auto, cpu or cuda"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(
    env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    (name,) = env
    assert name in info.value.message
    assert needle in info.value.message
    assert isinstance(info.value, ScorerError)


def test_load_config_does_not_mutate_its_mapping() -> None:
    env = {cfg.BIND_TO_PORT: "9100"}
    load_config(env)
    assert env == {cfg.BIND_TO_PORT: "9100"}


def test_unknown_variables_are_ignored() -> None:
    assert load_config({"SOMETHING_ELSE": "x"}) == load_config({})


def test_result_is_a_server_config() -> None:
    assert isinstance(load_config({}), ServerConfig)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, "auto"), ("", "auto"), ("OFF", "off"), (" 2048 ", "2048")]
)
def test_worker_memory_limit(raw: str | None, expected: str) -> None:
    env = {} if raw is None else {cfg.WORKER_MEMORY_LIMIT_MB: raw}
    assert load_config(env).worker_memory_limit == expected


@pytest.mark.parametrize("raw", ["lots", "10", "-1"])
def test_worker_memory_limit_refuses_nonsense(raw: str) -> None:
    with pytest.raises(ConfigError, match=cfg.WORKER_MEMORY_LIMIT_MB):
        load_config({cfg.WORKER_MEMORY_LIMIT_MB: raw})


def test_to_environ_round_trips_through_load_config(tmp_path: Path) -> None:
    """What MMS's workers read back is exactly what the parent derived."""
    plain = load_config({})
    assert load_config(to_environ(plain)) == plain
    custom = dataclasses.replace(
        load_config(
            {
                "SAGEMAKER_MULTI_MODEL": "true",
                "SAGEMAKER_SAFE_PORT_RANGE": "9000-9100",
                "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
                "SAGEMAKER_MODEL_SERVER_TIMEOUT": "7",
                "SCORER_PIP_ARGS": "--no-index --find-links /wheels",
                "SCORER_THREADS_PER_WORKER": "3",
                "SCORER_MMS_PLUGINS": str(tmp_path / "plugins"),
                "SCORER_MAX_BATCH_SIZE": "16",
                "SCORER_MAX_BATCH_DELAY_MS": "0",
                "SCORER_WORKER_MEMORY_LIMIT_MB": "512",
            }
        ),
        port=21234,
        run_dir=tmp_path / "run",
    )
    assert load_config(to_environ(custom)) == custom
    assert to_environ(custom)["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] == "7"


def test_batch_settings_are_checked() -> None:
    assert load_config({}).max_batch_size == 8
    with pytest.raises(ConfigError, match="SCORER_MAX_BATCH_SIZE"):
        load_config({"SCORER_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="SCORER_MAX_BATCH_DELAY_MS"):
        load_config({"SCORER_MAX_BATCH_DELAY_MS": "-1"})

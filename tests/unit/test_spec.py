"""scorer.models.spec: spec.json validation, round trip and canonical form."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from scorer.errors import ModelLoadError
from scorer.models.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPEC_FILE,
    SPEC_FORMAT,
    HeadSpec,
    InputSpec,
    ModelSpec,
)


def valid(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": SPEC_FORMAT,
        "name": "demo-creative-scorer",
        "version": "1.2.0",
        "architecture": "creative_cnn",
        "weights": "model.safetensors",
        "input": {
            "size": 64,
            "resize": 72,
            "policy": "letterbox",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "heads": [{"name": "appeal", "kind": "regression"}, {"name": "clickbait",
                                                             "kind": "probability"}],
    }  # fmt: skip
    data.update(overrides)
    return data


def load_error(data: Any) -> str:
    with pytest.raises(ModelLoadError) as info:
        ModelSpec.from_dict(data)
    assert info.value.status_code == 500
    return info.value.message


def test_from_dict_reads_every_field() -> None:
    spec = ModelSpec.from_dict(valid())
    assert spec.name == "demo-creative-scorer"
    assert spec.version == "1.2.0"
    assert spec.architecture == "creative_cnn"
    assert spec.weights == "model.safetensors"
    assert spec.format == SPEC_FORMAT
    assert spec.input == InputSpec(64, 72, "letterbox", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert spec.heads == (HeadSpec("appeal", "regression"), HeadSpec("clickbait", "probability"))
    assert spec.head_names == ["appeal", "clickbait"]


def test_minimal_spec_gets_defaults() -> None:
    spec = ModelSpec.from_dict({"name": "m", "architecture": "resnet18", "heads": [{"name": "s"}]})
    assert spec.version == "0"
    assert spec.weights == "model.safetensors"
    assert spec.format == SPEC_FORMAT
    assert spec.heads == (HeadSpec("s", "regression"),)
    assert spec.input == InputSpec(224, 256, "resize_center_crop", IMAGENET_MEAN, IMAGENET_STD)


def test_resize_defaults_to_the_imagenet_ratio_of_size() -> None:
    spec = ModelSpec.from_dict(valid(input={"size": 112}))
    assert (spec.input.size, spec.input.resize) == (112, 128)


@pytest.mark.parametrize("missing", ["name", "architecture", "heads"])
def test_missing_required_field(missing: str) -> None:
    data = valid()
    del data[missing]
    assert load_error(data) == f"{SPEC_FILE}: missing required field {missing!r}"


@pytest.mark.parametrize("data", [[], "spec", None, 3])
def test_spec_must_be_an_object(data: Any) -> None:
    assert load_error(data) == f"{SPEC_FILE} must be a JSON object"


def test_unsupported_format() -> None:
    assert "unsupported format 'scorer.model/v2'" in load_error(valid(format="scorer.model/v2"))


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "-dash", "x" * 129, "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    assert "is not a safe identifier" in load_error(valid(name=name))


@pytest.mark.parametrize("name", ["m", "model-1.0_final", "A" * 128])
def test_safe_names_are_accepted(name: str) -> None:
    assert ModelSpec.from_dict(valid(name=name)).name == name


@pytest.mark.parametrize("heads", [[], {}, "appeal", None])
def test_heads_must_be_a_non_empty_list(heads: Any) -> None:
    assert "'heads' must be a non-empty list" in load_error(valid(heads=heads))


@pytest.mark.parametrize("head", ["appeal", {"kind": "regression"}, 5])
def test_every_head_needs_a_name(head: Any) -> None:
    assert "every head needs a 'name'" in load_error(valid(heads=[head]))


def test_bad_head_kind() -> None:
    message = load_error(valid(heads=[{"name": "a", "kind": "classification"}]))
    assert "head 'a' has kind 'classification'" in message
    assert "regression" in message and "probability" in message


def test_duplicate_heads() -> None:
    message = load_error(valid(heads=[{"name": "a"}, {"name": "b"}, {"name": "a"}]))
    assert "head names must be unique" in message
    assert "['a', 'b', 'a']" in message


@pytest.mark.parametrize(
    "weights", ["sub/model.safetensors", "../model.safetensors", "/abs/model.pt", "a\\b.pt",
                ".model.pt"],
)  # fmt: skip
def test_weights_must_be_a_file_at_the_model_root(weights: str) -> None:
    assert "weights must be a file name at the model root" in load_error(valid(weights=weights))


@pytest.mark.parametrize(
    ("inp", "needle"),
    [
        ("224", "'input' must be an object"),
        ({"size": "big"}, "invalid 'input'"),
        ({"mean": [0.5, 0.5]}, "invalid 'input'"),
        ({"std": [1, 2, 3, 4]}, "invalid 'input'"),
        ({"mean": "rgb"}, "invalid 'input'"),
        ({"mean": 0.5}, "invalid 'input'"),
        ({"size": 4}, "input size 4"),
        ({"size": 8192}, "input size 8192"),
        ({"size": 64, "resize": 32}, "resize 32 invalid"),
        ({"policy": "stretch"}, "input policy 'stretch'"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
        ({"std": [0.2, -1, 0.2]}, "std must be positive"),
    ],
)
def test_bad_input_section(inp: Any, needle: str) -> None:
    assert needle in load_error(valid(input=inp))


def test_nan_std_is_refused() -> None:
    load_error(valid(input={"std": [math.nan, 0.2, 0.2]}))


def test_to_json_round_trips() -> None:
    spec = ModelSpec.from_dict(valid())
    again = ModelSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert again.to_json() == spec.to_json()


def test_to_dict_is_json_ready() -> None:
    data = ModelSpec.from_dict(valid()).to_dict()
    assert data["input"]["mean"] == [0.5, 0.5, 0.5]
    assert data["heads"] == [
        {"name": "appeal", "kind": "regression"},
        {"name": "clickbait", "kind": "probability"},
    ]
    assert json.loads(json.dumps(data)) == data


def test_to_json_is_canonical() -> None:
    spec = ModelSpec.from_dict(valid())
    text = spec.to_json()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    shuffled = dict(reversed(list(valid().items())))
    assert ModelSpec.from_dict(shuffled).to_json() == text


def test_read_from_a_model_dir(tmp_path: Path) -> None:
    spec = ModelSpec.from_dict(valid())
    (tmp_path / SPEC_FILE).write_text(spec.to_json())
    assert ModelSpec.read(tmp_path) == spec


def test_read_missing_spec(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"spec\.json not found in the model directory"):
        ModelSpec.read(tmp_path)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00"])
def test_read_invalid_json(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SPEC_FILE).write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"spec\.json is not valid JSON"):
        ModelSpec.read(tmp_path)


def test_read_validates(tmp_path: Path) -> None:
    (tmp_path / SPEC_FILE).write_text(json.dumps(valid(heads=[])))
    with pytest.raises(ModelLoadError, match="non-empty list"):
        ModelSpec.read(tmp_path)


def test_batching_override_is_read_and_round_trips() -> None:
    spec = ModelSpec.from_dict(valid(batching={"max_batch_size": 16, "max_delay_ms": 0}))
    assert spec.batching is not None
    assert (spec.batching.max_batch_size, spec.batching.max_delay_ms) == (16, 0)
    assert json.loads(spec.to_json())["batching"] == {"max_batch_size": 16, "max_delay_ms": 0}
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec
    partial = ModelSpec.from_dict(valid(batching={"max_delay_ms": 12}))
    assert partial.batching is not None and partial.batching.max_batch_size is None
    assert json.loads(partial.to_json())["batching"] == {"max_delay_ms": 12}


def test_no_batching_override_keeps_the_old_text() -> None:
    spec = ModelSpec.from_dict(valid())
    assert spec.batching is None and "batching" not in json.loads(spec.to_json())


@pytest.mark.parametrize(
    ("batching", "needle"),
    [
        ([8], "must be an object"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 2048}, "max_batch_size"),
        ({"max_batch_size": 8.0}, "max_batch_size"),
        ({"max_batch_size": True}, "max_batch_size"),
        ({"max_delay_ms": -1}, "max_delay_ms"),
        ({"max_delay_ms": "5"}, "max_delay_ms"),
        ({"batch_size": 8}, "unknown member"),
    ],
)
def test_bad_batching_override(batching: Any, needle: str) -> None:
    assert needle in load_error(valid(batching=batching))

"""Half-precision inference a spec asks for (``"dtype"``), and how far it is from float32.

bfloat16 runs on any CPU, so it is what these tests serve; float16 follows the same code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scorer.cli import main
from scorer.errors import ModelLoadError
from scorer.inference.chain import Chain
from scorer.inference.context import RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.models.loading import load_model
from scorer.models.package import package_directory, package_model
from scorer.models.precision import compare_precision, sample_inputs
from scorer.models.spec import SPEC_FILE, ModelSpec
from scorer.validate import validate
from tests.support.models import creative_model_dir, image_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def with_dtype(model_dir: Path, dtype: str) -> Path:
    """``model_dir`` with its spec asking for ``dtype``."""
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    (model_dir / SPEC_FILE).write_text(json.dumps({**spec, "dtype": dtype}))
    return model_dir


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_dtype(creative_model_dir(tmp_path_factory.mktemp("bf16"), "m"), "bfloat16")


def spec_dict(**extra: object) -> dict[str, object]:
    return {"name": "m", "architecture": "creative_cnn", "heads": [{"name": "a"}], **extra}


# --- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_spec_may_ask_for_half_precision(dtype: str) -> None:
    spec = ModelSpec.from_dict(spec_dict(dtype=dtype))
    assert spec.dtype == dtype
    assert json.loads(spec.to_json())["dtype"] == dtype
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec


def test_float32_is_the_default_and_keeps_the_old_text() -> None:
    spec = ModelSpec.from_dict(spec_dict())
    assert spec.dtype == "float32" and "dtype" not in json.loads(spec.to_json())
    assert ModelSpec.from_dict(spec_dict(dtype="float32")).to_json() == spec.to_json()


@pytest.mark.parametrize("dtype", ["float64", "half", "", 16])
def test_other_dtypes_are_refused(dtype: object) -> None:
    with pytest.raises(ModelLoadError, match=r"dtype .* is not one of"):
        ModelSpec.from_dict(spec_dict(dtype=dtype))


def test_a_compiled_form_stays_float32() -> None:
    serve = {"form": "aoti", "file": "model.aoti.pt2"}
    with pytest.raises(ModelLoadError, match=r"compiled form .* runs in float32"):
        ModelSpec.from_dict(spec_dict(dtype="float16", serve=serve))


# --- loading and serving --------------------------------------------------------------------


def test_loading_casts_the_network_and_inputs_follow(bf16_dir: Path) -> None:
    half = load_model(bf16_dir, CPU)
    full = load_model(bf16_dir, CPU, dtype="float32")
    assert half.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert {p.dtype for p in half.network.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in full.network.parameters()} == {torch.float32}
    batch = sample_inputs(64)
    with torch.inference_mode():
        got, want = half(batch), full(batch)
    assert got.dtype == torch.float32  # outputs come back as float32 for the chain
    diff = float((got - want).abs().max())
    assert 0 < diff < 0.1


def test_a_torchscript_network_is_cast_too(tmp_path: Path, bf16_dir: Path) -> None:
    model_dir = tmp_path / "ts"
    model_dir.mkdir()
    network = load_model(bf16_dir, CPU, dtype="float32").network
    torch.jit.script(network).save(str(model_dir / "model.pt"))
    spec = json.loads((bf16_dir / SPEC_FILE).read_text())
    (model_dir / SPEC_FILE).write_text(json.dumps({**spec, "weights": "model.pt"}))
    model = load_model(model_dir, CPU)
    assert model.source == "torchscript" and model.dtype == torch.bfloat16
    with torch.inference_mode():
        assert model(sample_inputs(64)).dtype == torch.float32


def test_an_export_program_cannot_be_cast(tmp_path: Path, bf16_dir: Path) -> None:
    model_dir = tmp_path / "pt2"
    model_dir.mkdir()
    network = load_model(bf16_dir, CPU, dtype="float32").network
    torch.export.save(
        torch.export.export(network, (torch.zeros(1, 3, 64, 64),)), model_dir / "model.pt2"
    )
    spec = json.loads((bf16_dir / SPEC_FILE).read_text())
    (model_dir / SPEC_FILE).write_text(json.dumps({**spec, "weights": "model.pt2"}))
    with pytest.raises(ModelLoadError, match="asks for bfloat16 inference, but a export"):
        load_model(model_dir, CPU)


def chain_for(model_dir: Path) -> Chain:
    chain = Chain.for_model_dir(
        model_dir, CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m")
    )
    chain.load(model_dir)
    return chain


def test_the_chain_serves_images_and_tensors_in_bfloat16(tmp_path: Path, bf16_dir: Path) -> None:
    full_dir = creative_model_dir(tmp_path, "m")  # the same seeded weights, float32
    half, full = chain_for(bf16_dir), chain_for(full_dir)
    assert half.model.dtype == torch.bfloat16
    jpeg = RequestContext(model_name="m", content_type="image/jpeg", accept="application/json")
    body = image_bytes("JPEG", (200, 150), seed=2)
    scores = [json.loads(c.transform(body, jpeg).body)["scores"][0]["appeal"] for c in (half, full)]
    assert scores[0] != scores[1] and abs(scores[0] - scores[1]) < 0.1
    npy = RequestContext(
        model_name="m", content_type="application/x-npy", accept="application/x-npy"
    )
    buffer = io.BytesIO()
    np.save(buffer, sample_inputs(64)[:1].numpy())
    out = np.load(io.BytesIO(half.transform(buffer.getvalue(), npy).body))
    assert out.dtype == np.float32 and out.shape == (1, 2)


# --- never silently: package and validate report the difference ----------------------------


def test_compare_precision_reports_the_largest_difference(bf16_dir: Path) -> None:
    check = compare_precision(bf16_dir)
    assert check is not None
    assert check.dtype == "bfloat16" and check.inputs == 9
    assert 0 < check.max_abs_diff < 0.1 and check.scale > 0
    assert check.line().startswith("precision:    bfloat16: max abs diff ")


def test_a_float32_spec_is_not_compared(tmp_path: Path) -> None:
    assert compare_precision(creative_model_dir(tmp_path, "m")) is None


def test_half_precision_outputs_that_overflow_refuse_the_model(tmp_path: Path) -> None:
    model_dir = with_dtype(creative_model_dir(tmp_path, "m"), "float16")
    weights = model_dir / "model.safetensors"
    state = load_file(str(weights))
    bias = next(key for key in state if key.startswith("heads.") and key.endswith("bias"))
    state[bias] = torch.full_like(state[bias], 1e5)  # above float16's largest, 65504
    save_file(state, str(weights))
    with pytest.raises(ModelLoadError, match="not finite in float16"):
        compare_precision(model_dir)


def test_package_reports_the_difference(tmp_path: Path, bf16_dir: Path) -> None:
    result = package_directory(bf16_dir, tmp_path / "m.tar.gz")
    assert result.precision is not None and result.precision.dtype == "bfloat16"
    assert 0 < result.precision.max_abs_diff < 0.1
    spec_file = tmp_path / "spec.json"
    spec_file.write_text((bf16_dir / SPEC_FILE).read_text())
    assembled = package_model(
        tmp_path / "n.tar.gz", spec_path=spec_file, weights_path=bf16_dir / "model.safetensors"
    )
    assert assembled.precision == result.precision


def test_the_cli_prints_it_and_refuses_to_compile_half_precision(
    tmp_path: Path, bf16_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["package", str(bf16_dir), "-o", str(tmp_path / "m.tar.gz")]) == 0
    assert "precision:    bfloat16: max abs diff" in capsys.readouterr().out
    with pytest.raises(ModelLoadError, match="--compile aoti makes a float32 form"):
        package_directory(bf16_dir, tmp_path / "c.tar.gz", compile_form="aoti")


def test_validate_reports_the_difference_on_the_sample_creative(bf16_dir: Path) -> None:
    report = validate(bf16_dir)
    assert report.precision is not None and report.precision.inputs == 10  # creative + 9
    assert 0 < report.precision.max_abs_diff < 0.1
    assert report.precision.line() in report.lines()
    assert report.output_heads == ["appeal", "clarity"]

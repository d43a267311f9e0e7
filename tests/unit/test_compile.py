"""``scorer package --compile aoti``: the compiled form, its record in spec.json, serving it,
and falling back to the weights when it cannot run.

One real AOTInductor compilation of a 32x32 ``creative_cnn`` is shared by the module (about
20-30 s on a 2-core machine, cold Inductor cache); every other test needs no compiler.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from scorer.cli import cli, main
from scorer.errors import ModelLoadError
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.models import loading
from scorer.models.compiled import Timings, choose
from scorer.models.loading import CompiledForward, load_model
from scorer.models.package import make_variants, package_directory, package_model
from scorer.models.spec import SPEC_FILE, Latency, ModelSpec, ServeSpec
from scorer.validate import validate
from tests.support.models import creative_model_dir, image_bytes, torchscript_model_dir

CPU = torch.device("cpu")
SIZE = 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Packaged:
    archive: Path
    model_dir: Path  # the archive, extracted
    output: str  # what `scorer package` printed


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    """`scorer package --compile aoti --keep-compiled` of a tiny model, once per module."""
    root = tmp_path_factory.mktemp("compiled")
    source = creative_model_dir(root, "tiny", size=SIZE, heads=("appeal", "clarity"))
    archive = root / "tiny.tar.gz"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor-cache"))  # cold, hermetic
        args = ["package", str(source), "--compile", "aoti", "--keep-compiled", "-o", str(archive)]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model_dir = root / "extracted"
    model_dir.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    yield Packaged(archive, model_dir, result.output)


# -- with a real compiled package -------------------------------------------------------------


def test_the_archive_records_the_compiled_form(packaged: Packaged) -> None:
    with tarfile.open(packaged.archive) as tar:
        assert sorted(tar.getnames()) == ["model.aoti.pt2", "model.safetensors", "spec.json"]
    serve = ModelSpec.read(packaged.model_dir).serve
    assert serve is not None
    assert (serve.form, serve.file, serve.device, serve.layout) == (
        "aoti", "model.aoti.pt2", "cpu", "channels_last"
    )  # fmt: skip
    assert serve.torch == torch.__version__.split("+")[0]
    assert serve.max_batch == 64
    assert serve.max_abs_diff is not None and serve.tolerance is not None
    assert serve.max_abs_diff <= serve.tolerance
    assert serve.eager_ms is not None and serve.compiled_ms is not None
    assert serve.compile_s is not None and serve.compile_s > 0
    if sys.platform == "linux" and serve.machine == "x86_64":
        assert serve.cpu_isa == "AVX2"  # portable code, not the packaging CPU's own
    for needle in ("compiled:     aoti in", "max abs diff", "serves:       aoti", "sha256 "):
        assert needle in packaged.output


def test_compiled_scores_match_eager_within_the_recorded_tolerance(packaged: Packaged) -> None:
    defaults = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="tiny")
    compiled = defaults.warm_up(defaults.model_fn(packaged.model_dir))
    eager = load_model(packaged.model_dir, CPU, compiled=False)
    assert (compiled.source, compiled.fallback_reason, eager.source) == ("aoti", None, "state_dict")
    assert compiled.head_names == ["appeal", "clarity"]
    serve = compiled.spec.serve
    assert serve is not None and serve.tolerance is not None
    # the serving path: decoded images, preprocessed per the spec, one forward pass
    images = defaults.input_fn(
        json.dumps({"instances": [{"b64": _b64(image_bytes(seed=s))} for s in range(5)]}).encode(),
        "application/json",
        spec=compiled.spec.input,
    )
    got = defaults.predict_fn(images, compiled)
    want = defaults.predict_fn(images, eager)
    assert got.head_names == want.head_names
    assert float(abs(got.values - want.values).max()) <= serve.tolerance
    # tensors in either memory format, and a batch larger than the compiled maximum (split)
    for batch in (1, 8, serve.max_batch + 6):
        data = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            assert float((compiled(data) - eager(data)).abs().max()) <= serve.tolerance


def test_serving_it_needs_no_compiler_and_no_inductor(packaged: Packaged, tmp_path: Path) -> None:
    code = (
        "import shutil, sys, torch; from pathlib import Path; "
        "from scorer.models.loading import load_model; "
        "assert not any(shutil.which(c) for c in ('cc', 'gcc', 'g++', 'c++', 'clang')); "
        f"m = load_model(Path({str(packaged.model_dir)!r}), torch.device('cpu')); "
        f"out = m(torch.zeros(2, 3, {SIZE}, {SIZE})); "
        "print(m.source, tuple(out.shape), 'torch._inductor' in sys.modules)"
    )
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "aoti (2, 2) False"
    assert not any(p.name.startswith("aotinductor_") for p in tmp_path.iterdir())  # cleaned up


def test_validate_reports_both_latencies(packaged: Packaged) -> None:
    report = validate(packaged.archive)
    assert report.served == "aoti" and report.fallback_reason is None
    assert set(report.forward_ms) == {"eager", "aoti"}
    text = "\n".join(report.lines())
    assert "compiled:     aoti (model.aoti.pt2): served" in text
    assert "forward:      eager " in text and ", aoti " in text
    assert "packaged:     eager " in text


def test_a_package_compiled_for_another_host_falls_back(
    packaged: Packaged, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _copy(packaged.model_dir, tmp_path / "m")
    _edit_serve(model_dir, torch="1.0.0")
    with caplog.at_level(logging.WARNING, logger="scorer.models.loading"):
        model = load_model(model_dir, CPU)
    assert model.source == "state_dict"
    here = torch.__version__.split("+")[0]
    assert model.fallback_reason == f"it was compiled with torch 1.0.0, this host has {here}"
    assert "serving the weights model.safetensors" in caplog.text


def test_repackaging_keeps_the_compiled_form(packaged: Packaged, tmp_path: Path) -> None:
    again = package_directory(packaged.model_dir, tmp_path / "again.tar.gz")
    assert "model.aoti.pt2" in again.files
    assert validate(again.path).served == "aoti"


# -- spec.json ---------------------------------------------------------------------------------

SERVE: dict[str, Any] = {
    "form": "aoti",
    "file": "model.aoti.pt2",
    "device": "cpu",
    "machine": "x86_64",
    "cpu_isa": "AVX2",
    "torch": "2.14.1",
    "max_batch": 64,
    "layout": "channels_last",
    "max_abs_diff": 2.4e-07,
    "tolerance": 0.0001,
    "compile_s": 17.3,
    "eager_ms": {"batch1": 4.8, "batch8": 3.9},
    "compiled_ms": {"batch1": 3.6, "batch8": 3.1},
}


def spec_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "m",
        "version": "1",
        "architecture": "creative_cnn",
        "input": {"size": SIZE, "resize": 36},
        "heads": [{"name": "appeal"}],
    }
    data.update(overrides)
    return data


def test_old_specs_have_no_serve_field_and_keep_their_text(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", size=SIZE)
    text = (model_dir / SPEC_FILE).read_text()
    spec = ModelSpec.read(model_dir)
    assert spec.serve is None
    assert "serve" not in json.loads(spec.to_json())
    assert spec.to_json() == text
    model = load_model(model_dir, CPU)
    assert (model.source, model.fallback_reason) == ("state_dict", None)


def test_serve_round_trips() -> None:
    spec = ModelSpec.from_dict(spec_data(serve=SERVE))
    assert spec.serve == ServeSpec(
        **{**SERVE, "eager_ms": Latency(4.8, 3.9), "compiled_ms": Latency(3.6, 3.1)}
    )
    assert json.loads(spec.to_json())["serve"] == SERVE
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec


def test_serve_needs_only_form_and_file() -> None:
    spec = ModelSpec.from_dict(spec_data(serve={"form": "aoti", "file": "fast.pt2"}))
    assert spec.serve == ServeSpec(form="aoti", file="fast.pt2")
    assert json.loads(spec.to_json())["serve"] == {
        "form": "aoti", "file": "fast.pt2", "device": "cpu", "machine": "", "cpu_isa": "",
        "torch": "", "max_batch": 64, "layout": "channels_last",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("serve", "needle"),
    [
        ([], "must be an object"),
        ({"file": "model.aoti.pt2"}, "missing 'form'"),
        ({"form": "aoti"}, "missing 'file'"),
        ({**SERVE, "form": "onnx"}, "form 'onnx'"),
        ({**SERVE, "file": "../model.aoti.pt2"}, "at the model root"),
        ({**SERVE, "file": "sub/model.aoti.pt2"}, "at the model root"),
        ({**SERVE, "file": ".hidden.pt2"}, "at the model root"),
        ({**SERVE, "file": "model.aoti.so"}, "must be a .pt2 file"),
        ({**SERVE, "file": "model.safetensors"}, "must be a .pt2 file"),
        ({**SERVE, "device": "tpu"}, "device 'tpu'"),
        ({**SERVE, "layout": "nhwc"}, "layout 'nhwc'"),
        ({**SERVE, "max_batch": 0}, "max_batch"),
        ({**SERVE, "max_batch": 8.0}, "max_batch"),
        ({**SERVE, "max_abs_diff": -1}, "max_abs_diff must be finite and not negative"),
        ({**SERVE, "tolerance": math.inf}, "tolerance must be finite"),
        ({**SERVE, "compile_s": "17"}, "compile_s must be a number"),
        ({**SERVE, "compile_s": True}, "compile_s must be a number"),
        ({**SERVE, "eager_ms": {"batch1": 4.8}}, "eager_ms must be an object"),
        ({**SERVE, "compiled_ms": [1, 2]}, "compiled_ms must be an object"),
    ],
)
def test_bad_serve_fields_are_refused(serve: Any, needle: str) -> None:
    with pytest.raises(ModelLoadError, match=r"spec\.json: 'serve'") as info:
        ModelSpec.from_dict(spec_data(serve=serve))
    assert needle in info.value.message


# -- loading: falling back to the weights ------------------------------------------------------


def _with_serve(model_dir: Path, **serve: Any) -> Path:
    data = json.loads((model_dir / SPEC_FILE).read_text())
    data["serve"] = {"form": "aoti", "file": "model.aoti.pt2", **serve}
    (model_dir / SPEC_FILE).write_text(json.dumps(data))
    return model_dir


def _edit_serve(model_dir: Path, **changes: Any) -> None:
    data = json.loads((model_dir / SPEC_FILE).read_text())
    data["serve"].update(changes)
    (model_dir / SPEC_FILE).write_text(json.dumps(data))


def _copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for path in src.iterdir():
        (dest / path.name).write_bytes(path.read_bytes())
    return dest


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _fallback(model_dir: Path, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.WARNING, logger="scorer.models.loading"):
        model = load_model(model_dir, CPU)
    assert model.source == "state_dict"
    assert model.fallback_reason is not None
    assert f"not serving the compiled form model.aoti.pt2 (aoti): {model.fallback_reason}" in (
        caplog.text
    )
    eager = load_model(model_dir, CPU, compiled=False)
    data = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(model(data), eager(data))
    return model.fallback_reason


def test_missing_compiled_file_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    assert _fallback(model_dir, caplog) == "model.aoti.pt2 named by spec.json is missing"


def test_a_file_that_is_not_a_package_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    (model_dir / "model.aoti.pt2").write_bytes(b"not a zip file")
    assert "not a readable AOTInductor package" in _fallback(model_dir, caplog)


def test_a_damaged_library_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    _zip(
        model_dir / "model.aoti.pt2",
        {
            "model.aoti/archive_format": b"pt2",
            "model.aoti/data/aotinductor/model/abc.wrapper.so": b"\x7fELF garbage",
            "model.aoti/data/aotinductor/model/abc.wrapper_metadata.json": json.dumps(
                {"AOTI_DEVICE_KEY": "cpu", "AOTI_MACHINE": platform.machine()}
            ).encode(),
        },
    )
    assert _fallback(model_dir, caplog).startswith("model.aoti.pt2: cannot be loaded: ")


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "unreadable package metadata: Failed to find wrapper metadata"),
        (b"{}", "its metadata names no device or machine"),
    ],
)
def test_a_package_without_metadata_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, metadata: bytes | None, reason: str
) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    members = {"model.aoti/data/aotinductor/model/abc.wrapper.so": b"\x7fELF garbage"}
    if metadata is not None:
        members["model.aoti/data/aotinductor/model/abc.wrapper_metadata.json"] = metadata
    _zip(model_dir / "model.aoti.pt2", members)
    assert _fallback(model_dir, caplog).startswith(f"model.aoti.pt2: {reason}")


@pytest.mark.parametrize(
    "member",
    [
        "models/model.json",  # an exported program: torch's Python loader would unpickle
        "data/weights/weight_0",
        "data/constants/custom_obj_0",
        "extra/notes.txt",
        "data/aotinductor/model/sub/x.so",
        "data/aotinductor/model/payload.py",
    ],
)
def test_a_package_holding_more_than_a_compiled_model_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, member: str
) -> None:
    import pickle

    marker = tmp_path / "pwned"
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    _zip(
        model_dir / "model.aoti.pt2",
        {
            "model.aoti/archive_format": b"pt2",
            "model.aoti/data/aotinductor/model/abc.wrapper.so": b"\x7fELF",
            f"model.aoti/{member}": pickle.dumps(Exploit(marker)),
        },
    )
    assert "which is not part of a compiled model" in _fallback(model_dir, caplog)
    assert not marker.exists()


def test_a_package_with_two_members_of_one_name_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    so = "model.aoti/data/aotinductor/model/abc.wrapper.so"
    with pytest.warns(UserWarning, match="Duplicate name"):
        _zip(model_dir / "model.aoti.pt2", {so: b"\x7fELF"})
        with zipfile.ZipFile(model_dir / "model.aoti.pt2", "a") as archive:
            archive.writestr(so, b"\x7fELF other")
    assert "holds two members of the same name" in _fallback(model_dir, caplog)


def test_a_package_without_its_library_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # torch's loader would compile the C++ sources: serving never needs a compiler
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    _zip(
        model_dir / "model.aoti.pt2",
        {"model.aoti/data/aotinductor/model/abc.wrapper.cpp": b"int main() {}"},
    )
    assert "holds 0 compiled libraries, expected 1" in _fallback(model_dir, caplog)


def test_a_cpu_package_on_a_gpu_worker_is_refused_before_loading() -> None:
    serve = ServeSpec(form="aoti", file="m.pt2", machine="x86_64", cpu_isa="AVX2")
    metadata = {"AOTI_DEVICE_KEY": "cpu", "AOTI_MACHINE": "x86_64", "AOTI_CPU_ISA": "AVX2"}
    with pytest.raises(ModelLoadError, match="it was compiled for cpu, this worker runs on cuda"):
        loading._check_host(serve, metadata, torch.device("cuda", 0))


@pytest.mark.parametrize(
    ("needed", "host", "fits"),
    [
        ("AVX2", "AVX2", True),
        ("AVX2", "AVX512", True),
        ("AVX512 AVX512_VNNI", "AVX512", True),
        ("AVX512", "AVX2", False),
        ("AVX2", "DEFAULT", False),
        ("SVE256", "SVE256", True),
        ("SVE256", "DEFAULT", False),
    ],
)
def test_cpu_isa_must_be_one_the_host_runs(
    monkeypatch: pytest.MonkeyPatch, needed: str, host: str, fits: bool
) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: host)
    machine = platform.machine()
    serve = ServeSpec(form="aoti", file="m.pt2", machine=machine, cpu_isa=needed)
    metadata = {"AOTI_DEVICE_KEY": "cpu", "AOTI_MACHINE": machine, "AOTI_CPU_ISA": needed}
    if fits:
        loading._check_host(serve, metadata, CPU)
    else:
        with pytest.raises(ModelLoadError, match=f"CPUs, this host's CPU is {host}"):
            loading._check_host(serve, metadata, CPU)


def test_another_machine_is_refused() -> None:
    serve = ServeSpec(form="aoti", file="m.pt2", machine="riscv64")
    metadata = {"AOTI_DEVICE_KEY": "cpu", "AOTI_MACHINE": "riscv64"}
    with pytest.raises(ModelLoadError, match="it was compiled for riscv64, this host is"):
        loading._check_host(serve, metadata, CPU)


# -- the compiled forward's own checks ----------------------------------------------------------


class Runner:
    """Stands in for torch's AOTInductor runner: records what it is given."""

    def __init__(self, heads: int = 1) -> None:
        self.heads = heads
        self.calls: list[torch.Tensor] = []

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        (batch,) = inputs
        self.calls.append(batch)
        return [batch.mean(dim=(2, 3))[:, : self.heads]]


def _forward(runner: Runner, max_batch: int = 4) -> CompiledForward:
    spec = ModelSpec.from_dict(spec_data())
    serve = ServeSpec(form="aoti", file="m.pt2", max_batch=max_batch)
    return CompiledForward(runner, spec, serve, CPU)


def test_compiled_forward_splits_large_batches_and_sets_the_layout() -> None:
    runner = Runner()
    data = torch.randn(10, 3, SIZE, SIZE)  # contiguous (NCHW)
    out = _forward(runner, max_batch=4)(data)
    assert [len(call) for call in runner.calls] == [4, 4, 2]
    assert all(call.is_contiguous(memory_format=torch.channels_last) for call in runner.calls)
    assert torch.allclose(out, data.mean(dim=(2, 3))[:, :1])


@pytest.mark.parametrize(
    ("data", "error", "needle"),
    [
        (torch.zeros(2, 3, 16, 16), ValueError, "takes (batch >= 1, 3, 32, 32) images"),
        (torch.zeros(3, SIZE, SIZE), ValueError, "got shape (3, 32, 32)"),
        (torch.zeros(0, 3, SIZE, SIZE), ValueError, "got shape (0, 3, 32, 32)"),
        (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64), TypeError, "float32"),
    ],
)
def test_compiled_forward_refuses_what_eager_would(
    data: torch.Tensor, error: type[Exception], needle: str
) -> None:
    runner = Runner()
    with pytest.raises(error) as info:
        _forward(runner)(data)
    assert needle in str(info.value)
    assert runner.calls == []  # the compiled code, which checks nothing, never saw it


# -- choosing, packaging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diff", "ratio", "keep", "chosen", "needle"),
    [
        (1e-6, (0.8, 0.75), False, "aoti", "measured faster at batch 1 and 8"),
        (1e-6, (0.8, 1.02), False, "eager", "did not measure faster"),
        (1e-6, (1.0, 0.75), False, "eager", "did not measure faster"),
        (1e-6, (1.2, 1.25), True, "aoti", "kept although it did not measure faster"),
        (1e-3, (0.8, 0.75), False, "eager", "outputs differ from eager by 0.001"),
        (1e-3, (0.8, 0.75), True, "eager", "outputs differ"),
        (math.nan, (0.8, 0.75), True, "eager", "outputs differ"),
    ],
)
def test_choose(
    diff: float, ratio: tuple[float, float], keep: bool, chosen: str, needle: str
) -> None:
    form, reason = choose("aoti", diff, 1e-4, Latency(*ratio), keep_compiled=keep)
    assert form == chosen
    assert needle in reason


def test_timings_compare_forms_round_by_round() -> None:
    # a drifting machine: every round slower than the last; aoti is 0.8x eager in each
    eager = {1: [1.0, 2.0, 4.0, 8.0, 16.0], 8: [1.0, 1.0, 1.0, 1.0, 1.0]}
    aoti = {1: [0.8, 1.6, 3.2, 6.4, 12.8], 8: [1.1, 1.1, 1.1, 1.1, 1.1]}
    timings = Timings({"eager": eager, "aoti": aoti})
    assert timings.median("eager") == Latency(4.0, 1.0)
    assert timings.ratio("aoti", "eager") == Latency(0.8, 1.1)
    assert timings.quartiles("eager", 1) == (1.5, 4.0, 12.0)


def test_compile_needs_a_state_dict_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"needs a spec\.json model"):
        package_directory(
            torchscript_model_dir(tmp_path, "ts"), tmp_path / "o.tar.gz", compile_form="aoti"
        )


def test_unknown_compile_form_is_refused(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", size=SIZE)
    with pytest.raises(ModelLoadError, match="unknown compiled form 'onnx'; known: none, aoti"):
        package_directory(model_dir, tmp_path / "o.tar.gz", compile_form="onnx")
    assert main(["package", str(model_dir), "--compile", "onnx", "-o", str(tmp_path / "x")]) == 2


def test_packaging_a_spec_naming_a_missing_compiled_file_is_refused(tmp_path: Path) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    with pytest.raises(ModelLoadError, match=r"model\.aoti\.pt2 named by spec\.json is missing"):
        package_directory(model_dir, tmp_path / "o.tar.gz")
    with pytest.raises(ModelLoadError, match="pass it with --extra, or package with --compile"):
        package_model(
            tmp_path / "o.tar.gz",
            spec_path=model_dir / SPEC_FILE,
            weights_path=model_dir / "model.safetensors",
        )


def test_variants_do_not_inherit_the_compiled_form(tmp_path: Path) -> None:
    model_dir = _with_serve(creative_model_dir(tmp_path, "m", size=SIZE))
    (model_dir / "model.aoti.pt2").write_bytes(b"compiled for the original heads")
    (result,) = make_variants(model_dir, tmp_path / "variants", 1)
    assert result.files == ("model.safetensors", "spec.json")
    with tarfile.open(result.path) as tar:
        spec = json.loads(tar.extractfile("spec.json").read())  # type: ignore[union-attr]
    assert "serve" not in spec


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_spec_replace_keeps_serve_optional() -> None:
    spec = ModelSpec.from_dict(spec_data(serve=SERVE))
    assert replace(spec, serve=None).to_json() == ModelSpec.from_dict(spec_data()).to_json()

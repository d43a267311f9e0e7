"""scorer.models.loading: every accepted layout, every refusal, and no unpickling by default."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scorer.errors import ModelLoadError, UnsafeModelError
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.models.family import BACKBONES, CreativeScorer
from scorer.models.loading import LoadedModel, default_spec, load_model
from scorer.models.spec import IMAGENET_MEAN, IMAGENET_STD, SPEC_FILE
from tests.support.models import Affine, creative_model_dir, torchscript_model_dir

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ChannelMeans(torch.nn.Module):
    """A bare image model: (N, 3, H, W) -> (N, 3) per-channel means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Exploit:
    """Unpickling this runs code that creates ``marker`` (the classic malicious pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def set_weights(model_dir: Path, weights: str) -> None:
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    spec["weights"] = weights
    (model_dir / SPEC_FILE).write_text(json.dumps(spec))


def state_dict_of(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def run(model: LoadedModel, seed: int = 0) -> torch.Tensor:
    size = model.spec.input.size
    batch = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model(batch)


def test_spec_and_safetensors(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", heads=("appeal", "clarity", "calm"))
    model = load_model(model_dir, CPU, name="ignored")
    assert model.source == "state_dict"
    assert isinstance(model.network, CreativeScorer)
    assert model.network.training is False
    assert model.device == CPU
    assert model.spec.name == "m"  # the spec's name, not the caller's
    assert model.head_names == ["appeal", "clarity", "calm"]
    assert model.spec.input.size == 64
    assert run(model).shape == (2, 3)
    loaded = model.network.state_dict()
    for key, tensor in state_dict_of(model_dir).items():
        assert torch.equal(loaded[key], tensor), key


def test_spec_and_pt_state_dict_gives_the_same_network(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    reference = run(load_model(model_dir, CPU))
    torch.save(state_dict_of(model_dir), model_dir / "weights.pt")
    (model_dir / "model.safetensors").unlink()
    set_weights(model_dir, "weights.pt")
    model = load_model(model_dir, CPU)
    assert model.source == "state_dict"
    assert torch.allclose(run(model), reference)


def test_spec_and_pth_state_dict(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.save(state_dict_of(model_dir), model_dir / "weights.pth")
    set_weights(model_dir, "weights.pth")
    assert load_model(model_dir, CPU).source == "state_dict"


def test_spec_and_legacy_format_pt_state_dict(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.save(state_dict_of(model_dir), model_dir / "old.pt", _use_new_zipfile_serialization=False)
    set_weights(model_dir, "old.pt")
    assert load_model(model_dir, CPU).source == "state_dict"


def test_spec_naming_a_torchscript_file(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    scripted = torch.jit.script(load_model(model_dir, CPU).network)
    scripted.save(str(model_dir / "scripted.pt"))
    set_weights(model_dir, "scripted.pt")
    model = load_model(model_dir, CPU)
    assert model.source == "torchscript"
    assert model.head_names == ["appeal", "clarity"]
    assert run(model).shape == (2, 2)


def test_bare_torchscript_model_pt(tmp_path: Path) -> None:
    model = load_model(torchscript_model_dir(tmp_path, "ts"), CPU, name="my-model")
    assert model.source == "torchscript"
    assert model.spec == default_spec("my-model")
    assert model.spec.architecture == "external"
    assert model.spec.input.size == 224
    assert model.spec.input.mean == IMAGENET_MEAN and model.spec.input.std == IMAGENET_STD
    assert model.head_names == []
    with torch.inference_mode():
        assert model(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [[1.5, 8.0]]


def test_bare_torchscript_image_model_gets_generic_heads_after_warm_up(tmp_path: Path) -> None:
    model_dir = tmp_path / "bare"
    model_dir.mkdir()
    torch.jit.script(ChannelMeans()).save(str(model_dir / "model.pt"))
    model = load_model(model_dir, CPU, name="bare")
    assert model.head_names == []
    served = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="bare").warm_up(model)
    assert served.head_names == ["score_0", "score_1", "score_2"]
    assert served.spec.name == "bare"
    assert model.head_names == []  # warm_up returns a model; it does not change its argument


def test_warm_up_leaves_a_non_image_torchscript_model_alone(tmp_path: Path) -> None:
    model = load_model(torchscript_model_dir(tmp_path, "ts"), CPU)
    served = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="ts").warm_up(model)
    assert served.head_names == []


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir, CPU)
    assert info.value.message == ("weights file 'model.safetensors' named by spec.json is missing")


def test_unknown_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    spec["architecture"] = "vgg_huge"
    (model_dir / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir, CPU)
    assert "unknown architecture 'vgg_huge'" in info.value.message
    assert str(sorted(BACKBONES)) in info.value.message
    assert "creative_cnn" in info.value.message and "resnet18" in info.value.message


def test_state_dict_for_another_head_count_is_refused(tmp_path: Path) -> None:
    two_heads = creative_model_dir(tmp_path, "two")
    three_heads = creative_model_dir(tmp_path, "three", heads=("a", "b", "c"))
    (three_heads / "model.safetensors").write_bytes((two_heads / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError) as info:
        load_model(three_heads, CPU)
    message = info.value.message
    assert message.startswith("model.safetensors does not match architecture 'creative_cnn'")
    assert "3 heads" in message
    assert "size mismatch" in message or "heads.weight" in message


def test_state_dict_with_missing_keys_is_refused(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    state = state_dict_of(model_dir)
    del state["heads.bias"]
    torch.save(state, model_dir / "partial.pt")
    set_weights(model_dir, "partial.pt")
    with pytest.raises(ModelLoadError, match="does not match architecture"):
        load_model(model_dir, CPU)


def test_pt_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.save({"epoch": 3, "lr": 0.1}, model_dir / "ckpt.pt")
    set_weights(model_dir, "ckpt.pt")
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir, CPU)
    assert info.value.message == "ckpt.pt: expected a state_dict (name -> tensor)"


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        ("model.safetensors", "not a readable safetensors file"),
        ("model.pt", "not a readable torch file"),
    ],
)
def test_corrupt_weights_are_a_load_error(tmp_path: Path, weights: str, needle: str) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    (model_dir / weights).write_bytes(b"\x00garbage" * 64)
    set_weights(model_dir, weights)
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir, CPU)
    assert needle in info.value.message
    assert not isinstance(info.value, UnsafeModelError)


def test_pickled_module_is_refused_by_default(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.save(Affine(), model_dir / "full.pt")
    set_weights(model_dir, "full.pt")
    with pytest.raises(UnsafeModelError) as info:
        load_model(model_dir, CPU)
    assert info.value.status_code == 400
    assert "full.pt contains pickled Python objects" in info.value.message
    assert "SCORER_ALLOW_PICKLE" in info.value.message


def test_pickled_module_loads_when_the_operator_allows_it(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.save(Affine(), model_dir / "full.pt")
    set_weights(model_dir, "full.pt")
    model = load_model(model_dir, CPU, allow_pickle=True)
    assert model.source == "pickle"
    assert model.network.training is False
    with torch.inference_mode():
        assert model(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [[1.5, 8.0]]


def test_malicious_pickle_never_runs_by_default(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    marker = tmp_path / "pwned"
    torch.save({"heads.weight": Exploit(marker)}, model_dir / "evil.pt")
    set_weights(model_dir, "evil.pt")
    with pytest.raises(UnsafeModelError):
        load_model(model_dir, CPU)
    assert not marker.exists()


def test_malicious_pickle_does_run_with_allow_pickle(tmp_path: Path) -> None:
    # the counterpart of the test above: the marker is a working detector
    model_dir = creative_model_dir(tmp_path, "m")
    marker = tmp_path / "pwned"
    torch.save({"heads.weight": Exploit(marker)}, model_dir / "evil.pt")
    set_weights(model_dir, "evil.pt")
    with pytest.raises(ModelLoadError, match="expected a state_dict"):
        load_model(model_dir, CPU, allow_pickle=True)
    assert marker.exists()


def _evil_export(path: Path, marker: Path, member: str) -> None:
    """A real torch.export program whose ``member`` is replaced by a malicious pickle (and,
    for a weight, marked as pickled in its config): torch.export.load unpickles both."""
    import zipfile

    program = torch.export.export(Affine(), (torch.zeros(1, 4),))
    torch.export.save(program, path.with_suffix(".good.pt2"))
    with (
        zipfile.ZipFile(path.with_suffix(".good.pt2")) as good,
        zipfile.ZipFile(path, "w") as evil,
    ):
        for name in good.namelist():
            data = good.read(name)
            if name.endswith(member):
                data = pickle.dumps(Exploit(marker))
            elif member.startswith("data/weights/") and name.endswith("_weights_config.json"):
                config = json.loads(data)
                config["config"]["linear.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            evil.writestr(name, data)


@pytest.mark.parametrize("member", ["data/weights/weight_0", "data/sample_inputs/model.pt"])
def test_a_malicious_pickle_in_an_export_program_never_runs_by_default(
    tmp_path: Path, member: str
) -> None:
    marker = tmp_path / "pwned"
    _evil_export(tmp_path / "model.pt2", marker, member)
    with pytest.raises(UnsafeModelError, match="holds pickled Python objects") as info:
        load_model(tmp_path, CPU)
    assert member in info.value.message and "SCORER_ALLOW_PICKLE" in info.value.message
    assert not marker.exists()
    with pytest.raises(ModelLoadError):  # the counterpart: torch itself runs it
        load_model(tmp_path, CPU, allow_pickle=True)
    assert marker.exists()


def test_an_export_program_with_two_members_of_one_name_is_refused(tmp_path: Path) -> None:
    import zipfile

    marker = tmp_path / "pwned"
    payload = pickle.dumps(Exploit(marker))
    torch.export.save(torch.export.export(Affine(), (torch.zeros(1, 4),)), tmp_path / "model.pt2")
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(tmp_path / "model.pt2", "a") as archive,
    ):
        archive.writestr("model/data/sample_inputs/model.pt", payload)
    with pytest.raises(UnsafeModelError, match="two members of the same name"):
        load_model(tmp_path, CPU)
    assert not marker.exists()


def test_an_export_program_marking_a_payload_it_lacks_as_pickled_is_refused(
    tmp_path: Path,
) -> None:
    import zipfile

    torch.export.save(torch.export.export(Affine(), (torch.zeros(1, 4),)), tmp_path / "good.pt2")
    with (
        zipfile.ZipFile(tmp_path / "good.pt2") as good,
        zipfile.ZipFile(tmp_path / "model.pt2", "w") as edited,
    ):
        for name in good.namelist():
            data = good.read(name)
            if name.endswith("_weights_config.json"):
                config = json.loads(data)
                config["config"]["linear.weight"].update(use_pickle=True, path_name="/tmp/x.pt")
                data = json.dumps(config).encode()
            edited.writestr(name, data)
    (tmp_path / "good.pt2").unlink()
    with pytest.raises(UnsafeModelError, match="as pickled but does not hold it"):
        load_model(tmp_path, CPU)


def test_an_export_program_holding_compiled_code_is_refused(tmp_path: Path) -> None:
    import zipfile

    torch.export.save(torch.export.export(Affine(), (torch.zeros(1, 4),)), tmp_path / "model.pt2")
    with zipfile.ZipFile(tmp_path / "model.pt2", "a") as archive:
        archive.writestr("model/data/aotinductor/model/x.wrapper.so", b"\x7fELF")
    with pytest.raises(UnsafeModelError, match="holds compiled code"):
        load_model(tmp_path, CPU)


def test_empty_dir_lists_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path, CPU)
    message = info.value.message
    assert "no spec.json, model.pt or model.pt2 at the model root" in message
    assert "(found: nothing)" in message


def test_dir_without_a_model_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    (tmp_path / "README.txt").write_text("x")
    (tmp_path / "nested").mkdir()
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path, CPU)
    assert "(found: README.txt, nested, weights.bin)" in info.value.message
    assert "archive root" in info.value.message


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "absent", CPU)


def test_invalid_spec_is_a_load_error(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    (model_dir / SPEC_FILE).write_text('{"name": "m"}')
    with pytest.raises(ModelLoadError, match="missing required field 'architecture'"):
        load_model(model_dir, CPU)


def test_spec_wins_over_a_bare_model_pt(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m")
    torch.jit.script(Affine()).save(str(model_dir / "model.pt"))
    model = load_model(model_dir, CPU)
    assert model.source == "state_dict"
    assert model.head_names == ["appeal", "clarity"]


def test_corrupt_bare_torchscript_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not torchscript")
    with pytest.raises(ModelLoadError, match=r"model\.pt: not a loadable TorchScript file"):
        load_model(tmp_path, CPU)


def test_default_spec() -> None:
    spec = default_spec("x", heads=2)
    assert spec.head_names == ["score_0", "score_1"]
    assert spec.weights == "model.pt"
    assert spec.version == "0"

"""scorer.inference.defaults: the default model_fn/input_fn/predict_fn/output_fn, one by one."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from scorer.errors import BadRequestError, ModelLoadError, UnsupportedAcceptError
from scorer.inference import content_types as ct
from scorer.inference.codecs import ImageBatch
from scorer.inference.defaults import (
    CreativeScoringDefaults,
    Scores,
    declared_input,
    input_spec_of,
)
from scorer.inference.dry_run import rejected_input
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.inference.images import decode_image, preprocess_images
from scorer.models.loading import LoadedModel, load_model
from scorer.models.spec import InputSpec
from tests.support.models import creative_model_dir, image_bytes, torchscript_model_dir

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def defaults(name: str = "m") -> CreativeScoringDefaults:
    return CreativeScoringDefaults(CPU, allow_pickle=False, model_name=name)


@pytest.fixture(scope="module")
def creative(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CreativeScoringDefaults, LoadedModel]:
    model_dir = creative_model_dir(tmp_path_factory.mktemp("creative"), "creative", version="7")
    fns = defaults("creative")
    return fns, fns.model_fn(model_dir)


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> tuple[CreativeScoringDefaults, LoadedModel]:
    model_dir = torchscript_model_dir(tmp_path_factory.mktemp("affine"), "affine")
    fns = defaults("affine")
    return fns, fns.model_fn(str(model_dir))


def scores(values: list[list[float]], names: list[str]) -> Scores:
    return Scores(np.array(values, dtype=np.float32), names, model="m", version="3")


# --- model_fn / input_fn ------------------------------------------------------------------------


def test_a_model_that_is_not_a_loaded_model_gets_the_imagenet_input_spec() -> None:
    assert input_spec_of(lambda x: x) == InputSpec()
    assert input_spec_of(None) == InputSpec()


def test_model_fn_returns_a_model_that_carries_its_input_spec(creative: tuple) -> None:
    _, model = creative
    assert isinstance(model, LoadedModel)
    assert model.source == "state_dict"
    assert input_spec_of(model) is model.spec.input
    assert model.spec.input.size == 64


def test_the_defaults_hold_configuration_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    fns = defaults("creative")
    before = dict(vars(fns))
    fns.model_fn(creative_model_dir(tmp_path_factory.mktemp("c"), "creative"))
    assert vars(fns) == before
    assert set(before) == {"device", "allow_pickle", "model_name", "pool", "decoding"}
    assert fns.pool is SERIAL


def test_model_fn_accepts_a_string_path(affine: tuple) -> None:
    _, model = affine
    assert model.source == "torchscript"


def test_input_fn_keeps_images_as_pil(creative: tuple) -> None:
    fns, _ = creative
    data = fns.input_fn(image_bytes("PNG", (90, 60)), ct.PNG)
    assert isinstance(data, ImageBatch)
    assert data.single is True
    assert data.images[0].size == (90, 60)


def test_input_fn_decodes_jpeg_at_the_spec_resize_it_is_given(creative: tuple) -> None:
    fns, model = creative  # size 64, resize 72: a 1024x768 JPEG is drafted at 1/8 scale
    data = fns.input_fn(image_bytes("JPEG", (1024, 768)), ct.JPEG, spec=model.spec.input)
    assert isinstance(data, ImageBatch)
    assert data.images[0].size == (128, 96)


def test_input_fn_without_a_spec_decodes_for_the_imagenet_default() -> None:
    data = defaults().input_fn(image_bytes("JPEG", (1024, 768)), ct.JPEG)  # resize 256: 1/2
    assert isinstance(data, ImageBatch)
    assert data.images[0].size == (512, 384)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"[[1, 2, 3, 4]]", ct.JSON), (b"1,2,3,4\n", ct.CSV)],
)
def test_input_fn_turns_tensor_formats_into_float_tensors(
    creative: tuple, body: bytes, content_type: str
) -> None:
    fns, _ = creative
    data = fns.input_fn(body, content_type)
    assert isinstance(data, torch.Tensor)
    assert data.dtype == torch.float32
    assert data.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]


def test_input_fn_propagates_client_errors(creative: tuple) -> None:
    fns, _ = creative
    with pytest.raises(BadRequestError):
        fns.input_fn(b"[1, NaN]", ct.JSON)


# --- predict_fn ---------------------------------------------------------------------------------


def test_predict_fn_scores_a_batch_in_one_pass(creative: tuple) -> None:
    fns, model = creative
    imgs = [decode_image(image_bytes("JPEG", (80, 60), seed=s)) for s in range(3)]
    result = fns.predict_fn(ImageBatch(imgs, single=False), model)
    assert isinstance(result, Scores)
    assert result.values.shape == (3, 2)
    assert result.values.dtype == np.float32
    assert result.head_names == ["appeal", "clarity"]
    assert (result.model, result.version) == ("creative", "7")
    with torch.inference_mode():
        expected = model(preprocess_images(imgs, model.spec.input)).numpy()
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6)


class CountingPool(ImagePool):
    def __init__(self, threads: int) -> None:
        super().__init__(threads)
        self.mapped: list[int] = []

    def map_in_order(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        self.mapped.append(len(items))
        return super().map_in_order(fn, items)


def test_images_are_decoded_and_resized_on_the_pool_passed_in(creative: tuple) -> None:
    _, model = creative
    pool = CountingPool(2)
    fns = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m", pool=pool)
    try:
        image = base64.b64encode(image_bytes("PNG", (80, 60))).decode()
        body = json.dumps({"images": [image, image, image]}).encode()
        data = fns.input_fn(body, ct.JSON, spec=model.spec.input)
        assert pool.mapped == [3]  # the decoder used it
        assert isinstance(data, ImageBatch)
        result = fns.predict_fn(data, model)
        assert pool.mapped == [3, 3]  # and so did preprocessing
        reference = defaults().predict_fn(data, model)
        np.testing.assert_allclose(result.values, reference.values, rtol=1e-5, atol=1e-6)
    finally:
        pool.close()


def test_predict_fn_runs_tensors_through_the_model(affine: tuple) -> None:
    fns, model = affine
    out = fns.predict_fn(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), model)
    assert out.tolist() == [[1.5, 8.0]]


def test_predict_fn_accepts_numpy_arrays(affine: tuple) -> None:
    fns, model = affine
    out = fns.predict_fn(np.array([[0.0, 1.0, 1.0, 1.0]], dtype=np.float32), model)
    assert out.tolist() == [[0.5, 2.0]]


def test_predict_fn_tensor_the_model_rejects_is_400(affine: tuple) -> None:
    fns, model = affine
    with pytest.raises(BadRequestError) as info:
        fns.predict_fn(torch.ones(2, 3), model)
    assert info.value.message.startswith("input tensor of shape (2, 3) was rejected by the model: ")
    assert "\n" not in info.value.message


def test_predict_fn_names_the_operator_that_refused_the_tensor(affine: tuple) -> None:
    fns, model = affine  # a bare TorchScript model declares no input: a dry run finds the fault
    with pytest.raises(BadRequestError) as info:
        fns.predict_fn(torch.ones(2, 3), model)
    reason = info.value.message.removeprefix(
        "input tensor of shape (2, 3) was rejected by the model: "
    )
    assert "[2, 3]" in reason and "[4, 2]" in reason  # the input's and the weight's shapes
    assert "TorchScript" not in reason  # not the interpreter's generic first line


def test_predict_fn_empty_tensor_is_400_before_the_forward_pass() -> None:
    calls: list[torch.Tensor] = []
    with pytest.raises(BadRequestError) as info:
        defaults().predict_fn(torch.ones(0, 4), calls.append)
    assert info.value.message == "input tensor of shape (0, 4) is empty"
    assert calls == []


class Recording(torch.nn.Module):
    """A network that records what it is given and answers like the creative model."""

    def __init__(self, network: Any) -> None:
        super().__init__()
        self.network = network
        self.seen: list[tuple[tuple[int, ...], torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((tuple(x.shape), x.dtype))
        out: torch.Tensor = self.network(x)
        return out


def recording(model: LoadedModel) -> tuple[LoadedModel, Recording]:
    network = Recording(model.network)
    return LoadedModel(network=network, spec=model.spec, device=CPU, source="x"), network


@pytest.mark.parametrize(
    "shape",
    [(1, 4), (3, 64, 64), (1, 1, 64, 64), (1, 4, 64, 64), (2, 3, 32, 32), (1, 3, 64, 65)],
)
def test_tensor_not_the_declared_input_is_400_before_the_forward_pass(
    creative: tuple, shape: tuple[int, ...]
) -> None:
    fns, model = creative  # its spec.json declares 64x64 RGB images
    model, network = recording(model)
    with pytest.raises(BadRequestError) as info:
        fns.predict_fn(torch.zeros(shape), model)
    assert info.value.message == (
        f"input tensor of shape {shape} was rejected by the model: its spec declares "
        "(batch, 3, 64, 64) images"
    )
    assert network.seen == []


def test_declared_input_of_another_dtype_is_cast_to_float32(creative: tuple) -> None:
    fns, model = creative
    model, network = recording(model)
    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = fns.predict_fn(batch.double(), model)
    assert network.seen == [((2, 3, 64, 64), torch.float32)]
    with torch.inference_mode():
        expected = model.network.network(batch)
    torch.testing.assert_close(out, expected)


def test_declared_input_of_complex_numbers_is_400(creative: tuple) -> None:
    fns, model = creative
    with pytest.raises(BadRequestError) as info:
        fns.predict_fn(torch.zeros(1, 3, 64, 64, dtype=torch.complex64), model)
    assert info.value.message == (
        "input tensor of dtype complex64 was rejected by the model: it takes real numbers"
    )


class Faulty(torch.nn.Module):
    """Raises ``error`` from its forward pass, whatever the input."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


def cuda_oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def declared_faulty(model: LoadedModel, error: BaseException) -> LoadedModel:
    return LoadedModel(network=Faulty(error), spec=model.spec, device=CPU, source="x")


@pytest.mark.parametrize("error", [cuda_oom(), MemoryError("host memory exhausted")])
@pytest.mark.parametrize("declares_input", [True, False])
def test_out_of_memory_in_the_forward_pass_is_not_the_clients_fault(
    creative: tuple, error: BaseException, declares_input: bool
) -> None:
    fns, model = creative
    faulty = declared_faulty(model, error) if declares_input else Faulty(error)
    assert (declared_input(faulty) is not None) == declares_input
    with pytest.raises(type(error)) as info:  # the handler answers 507 (test_handler_service)
        fns.predict_fn(torch.zeros(1, 3, 64, 64), faulty)
    assert info.value is error


class Oversize(torch.nn.Module):
    """A forward pass that really asks torch's CPU allocator for 16 TiB."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] + torch.empty(1 << 44, dtype=torch.uint8)[:1]


@pytest.mark.parametrize("declares_input", [True, False])
def test_a_real_cpu_allocation_failure_in_the_forward_pass_is_a_memory_error(
    creative: tuple, declares_input: bool
) -> None:
    fns, model = creative
    oversize = declared_faulty(model, MemoryError()) if declares_input else Oversize()
    if declares_input:
        oversize.network = Oversize()
    with pytest.raises(MemoryError, match="DefaultCPUAllocator: can't allocate memory"):
        fns.predict_fn(torch.zeros(1, 3, 64, 64), oversize)  # tensor input: 507, not 500/400
    images = ImageBatch([Image.new("RGB", (64, 64))], single=True)
    with pytest.raises(MemoryError, match="DefaultCPUAllocator"):
        fns.predict_fn(images, oversize)  # image input: 507, not 500


def test_internal_fault_on_the_declared_input_is_the_models(creative: tuple) -> None:
    fns, model = creative
    error = RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
    with pytest.raises(RuntimeError) as info:  # a 500 at the handler, never a 400
        fns.predict_fn(torch.zeros(1, 3, 64, 64), declared_faulty(model, error))
    assert info.value is error


class ValueDependent(torch.nn.Module):
    """Takes any (batch, 4) tensor but fails inside on some values: a model fault."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return x * 2


class ScriptedFault(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 4:
            raise RuntimeError("scripted model's own check failed")
        return x


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: Faulty(RuntimeError("internal: weights not initialised")),
        ValueDependent,
        lambda: torch.jit.script(ScriptedFault()),
    ],
    ids=["raises", "value-dependent", "torchscript-raises"],
)
def test_internal_fault_of_a_model_declaring_no_input_is_the_models(
    make_model: Callable[[], Any],
) -> None:
    model = make_model()
    assert declared_input(model) is None
    # a RuntimeError (a torch.jit.Error from TorchScript's raise): a 500 at the handler, not 400
    with pytest.raises((RuntimeError, torch.jit.Error)) as info:
        defaults().predict_fn(torch.full((2, 4), -1.0), model)
    assert not isinstance(info.value, BadRequestError)


def test_a_model_declaring_no_input_serves_what_it_takes() -> None:
    assert defaults().predict_fn(torch.ones(2, 4), ValueDependent()).tolist() == [[2.0] * 4] * 2


def test_a_bare_program_declares_no_input_and_a_spec_does(creative: tuple, affine: tuple) -> None:
    assert declared_input(affine[1]) is None
    assert declared_input(creative[1]) is creative[1].spec.input
    assert declared_input(lambda x: x) is None


def test_dry_run_refusal_is_about_shapes_not_values() -> None:
    # the forward pass is repeated on a fake tensor: a shape the model cannot take is named,
    # a tensor it takes (whatever the values) is not
    assert rejected_input(torch.nn.Linear(4, 2), torch.ones(2, 3)) is not None
    assert rejected_input(torch.nn.Linear(4, 2), torch.ones(2, 4)) is None
    assert rejected_input(ValueDependent(), torch.full((2, 4), -1.0)) is None
    assert rejected_input(Faulty(RuntimeError("x")), torch.ones(2, 4)) is None


def test_predict_fn_passes_other_data_to_the_model_untouched() -> None:
    assert defaults().predict_fn({"k": 1}, lambda data: ("seen", data)) == ("seen", {"k": 1})


def test_predict_fn_with_a_plain_callable_model_uses_generic_names() -> None:
    fns = defaults("plain")
    img = Image.new("RGB", (20, 20), (255, 255, 255))
    result = fns.predict_fn(ImageBatch([img], single=True), lambda x: x.mean(dim=(2, 3)))
    assert isinstance(result, Scores)
    assert result.head_names == ["score_0", "score_1", "score_2"]
    assert (result.model, result.version) == ("plain", "0")


def test_model_returning_a_non_tensor_for_images_is_a_server_error() -> None:
    fns = defaults()
    batch = ImageBatch([Image.new("RGB", (20, 20))], single=True)
    with pytest.raises(ModelLoadError, match="model returned dict, expected a tensor"):
        fns.predict_fn(batch, lambda x: {"not": "a tensor"})


def test_model_with_more_outputs_than_heads_is_a_server_error(creative: tuple) -> None:
    fns, model = creative
    wrong = LoadedModel(
        network=lambda x: torch.zeros(x.shape[0], 5), spec=model.spec, device=CPU, source="x"
    )
    batch = ImageBatch([Image.new("RGB", (70, 70))], single=True)
    with pytest.raises(ModelLoadError) as info:
        fns.predict_fn(batch, wrong)
    assert info.value.message == ("model produced 5 outputs per image but its spec names 2 heads")


# --- output_fn ----------------------------------------------------------------------------------


def test_scores_records() -> None:
    assert scores([[1.0, 2.0], [3.0, 4.0]], ["a", "b"]).records() == [
        {"a": 1.0, "b": 2.0},
        {"a": 3.0, "b": 4.0},
    ]


def test_output_fn_scores_as_json() -> None:
    body = defaults().output_fn(scores([[0.25, -1.0]], ["appeal", "clarity"]), ct.JSON)
    assert json.loads(body) == {
        "scores": [{"appeal": 0.25, "clarity": -1.0}],
        "model": "m",
        "version": "3",
    }


def test_output_fn_scores_nan_becomes_null() -> None:
    body = defaults().output_fn(scores([[math.nan, math.inf]], ["a", "b"]), ct.JSON)
    assert json.loads(body)["scores"] == [{"a": None, "b": None}]


def test_output_fn_scores_as_csv_has_a_header_row() -> None:
    body = defaults().output_fn(scores([[0.5, 1.0], [2.0, 3.5]], ["appeal", "clarity"]), ct.CSV)
    assert body.decode().splitlines() == ["appeal,clarity", "0.5,1.0", "2.0,3.5"]


def test_output_fn_scores_as_npy() -> None:
    body = defaults().output_fn(scores([[0.5, 1.0]], ["a", "b"]), ct.NPY)
    array = np.load(io.BytesIO(body))
    assert array.dtype == np.float32
    assert array.tolist() == [[0.5, 1.0]]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(ct.JSON, b"[[1.5, 8.0]]"), (ct.CSV, b"1.5,8.0\n")],
)
def test_output_fn_tensors_are_encoded_as_is(accept: str, expected: bytes) -> None:
    assert defaults().output_fn(torch.tensor([[1.5, 8.0]]), accept) == expected


def test_output_fn_passes_bytes_and_strings_through() -> None:
    fns = defaults()
    assert fns.output_fn(b"raw", ct.CSV) == b"raw"
    assert fns.output_fn(bytearray(b"raw"), ct.CSV) == b"raw"
    assert fns.output_fn("text", ct.JSON) == b"text"


@pytest.mark.parametrize("prediction", [scores([[1.0]], ["a"]), torch.ones(1)])
def test_output_fn_unsupported_accept_is_406(prediction: object) -> None:
    with pytest.raises(UnsupportedAcceptError):
        defaults().output_fn(prediction, "image/png")


# --- warm_up ------------------------------------------------------------------------------------


def test_warm_up_returns_models_that_are_not_loaded_models_untouched() -> None:
    model = lambda x: 1 / 0  # noqa: E731 - never called
    assert defaults().warm_up(model) is model


def test_warm_up_raises_for_a_broken_state_dict_model(creative: tuple) -> None:
    fns, model = creative

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("broken network")

    bad = LoadedModel(network=broken, spec=model.spec, device=CPU, source="state_dict")
    with pytest.raises(RuntimeError, match="broken network"):
        fns.warm_up(bad)


def test_warm_up_returns_a_model_with_spec_heads_as_it_is(creative: tuple) -> None:
    fns, model = creative
    assert fns.warm_up(model) is model
    assert model.head_names == ["appeal", "clarity"]


class ChannelMeans(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_warm_up_names_a_bare_image_models_heads_in_a_copy(tmp_path: Path) -> None:
    model_dir = tmp_path / "bare"
    model_dir.mkdir()
    torch.jit.script(ChannelMeans()).save(str(model_dir / "model.pt"))
    model = load_model(model_dir, CPU, name="bare")
    spec = model.spec
    served = defaults("bare").warm_up(model)
    assert served is not model
    assert served.head_names == ["score_0", "score_1", "score_2"]
    assert served.spec.name == "bare"
    assert served.spec.input == spec.input
    assert served.network is model.network
    assert model.spec is spec and model.head_names == []  # the model it was given is unchanged


def test_warm_up_leaves_a_non_image_torchscript_model_alone(affine: tuple) -> None:
    fns, model = affine
    spec = model.spec
    assert fns.warm_up(model) is model
    assert model.spec is spec and model.head_names == []

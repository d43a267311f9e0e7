"""scorer.inference.chain: whole requests through defaults and user hooks, in-process (no MMS)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from scorer.errors import BadRequestError, UnsupportedAcceptError, UnsupportedContentTypeError
from scorer.inference import codecs
from scorer.inference import content_types as ct
from scorer.inference.chain import Chain, Response
from scorer.inference.context import CUSTOM_ATTRIBUTES, RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.models.loading import LoadedModel
from scorer.models.spec import InputSpec
from tests.support.models import add_code, creative_model_dir, image_bytes, torchscript_model_dir

CPU = torch.device("cpu")
JPEG = image_bytes("JPEG", (96, 80), seed=1)
PNG = image_bytes("PNG", (90, 70), seed=2)
WEBP = image_bytes("WEBP", (70, 90), seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_chain(model_dir: Path, **kwargs: str) -> Chain:
    defaults = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m")
    chain = Chain.for_model_dir(model_dir, defaults, **kwargs)
    chain.load(model_dir)
    return chain


def request(
    chain: Chain, body: bytes, content_type: str = "", accept: str = "", **headers: str
) -> Response:
    ctx = RequestContext(
        model_name="m", content_type=content_type, accept=accept, headers=headers, request_id="r1"
    )
    return chain.transform(body, ctx)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def creative(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    root = tmp_path_factory.mktemp("creative")
    return make_chain(creative_model_dir(root, "creative", heads=("appeal", "clarity", "calm")))


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(torchscript_model_dir(tmp_path_factory.mktemp("affine"), "affine"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {"creative": creative_model_dir(root, "m"), "affine": torchscript_model_dir(root, "a")}


@pytest.fixture
def creative_dir(sources: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of a two-head creative model (appeal, clarity) to add user code to."""
    return Path(shutil.copytree(sources["creative"], tmp_path / "creative"))


@pytest.fixture
def affine_dir(sources: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the bare TorchScript Affine model."""
    return Path(shutil.copytree(sources["affine"], tmp_path / "affine"))


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.fixture
def clean_imports() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


# --- images through the defaults ----------------------------------------------------------------


def test_image_gives_named_scores_with_model_and_version(creative: Chain) -> None:
    response = request(creative, JPEG, ct.JPEG, ct.JSON)
    assert response.content_type == ct.JSON
    payload = json.loads(response.body)
    assert set(payload) == {"scores", "model", "version"}
    assert (payload["model"], payload["version"]) == ("creative", "1")
    assert len(payload["scores"]) == 1
    assert list(payload["scores"][0]) == ["appeal", "clarity", "calm"]
    assert all(isinstance(v, float) for v in payload["scores"][0].values())


@pytest.mark.parametrize(
    "content_type",
    [ct.JPEG, "image/jpg", ct.X_IMAGE, ct.OCTET_STREAM, "", "IMAGE/JPEG; charset=binary"],
)
def test_every_raw_image_content_type_scores_the_same(creative: Chain, content_type: str) -> None:
    reference = json.loads(request(creative, JPEG, ct.JPEG).body)
    assert json.loads(request(creative, JPEG, content_type).body) == reference


@pytest.mark.parametrize(("body", "content_type"), [(PNG, ct.PNG), (WEBP, ct.WEBP)])
def test_png_and_webp_are_scored(creative: Chain, body: bytes, content_type: str) -> None:
    payload = json.loads(request(creative, body, content_type).body)
    assert len(payload["scores"]) == 1


def test_batch_of_base64_images_equals_per_image_results(creative: Chain) -> None:
    images = [JPEG, PNG, WEBP]
    body = json.dumps({"images": [b64(images[0]), {"b64": b64(images[1])}, b64(images[2])]})
    batch = json.loads(request(creative, body.encode(), ct.JSON).body)["scores"]
    single = [
        json.loads(request(creative, img, ct.OCTET_STREAM).body)["scores"][0] for img in images
    ]
    assert len(batch) == 3
    for got, want in zip(batch, single, strict=True):
        assert list(got) == list(want)
        assert list(got.values()) == pytest.approx(list(want.values()), rel=1e-4, abs=1e-5)


def test_json_single_image_equals_raw_bytes(creative: Chain) -> None:
    raw = json.loads(request(creative, PNG, ct.PNG).body)
    wrapped = json.loads(request(creative, json.dumps({"image": b64(PNG)}).encode(), ct.JSON).body)
    assert wrapped["scores"][0] == pytest.approx(raw["scores"][0], rel=1e-5, abs=1e-6)


def test_accept_csv_gives_a_header_row_of_head_names(creative: Chain) -> None:
    body = json.dumps({"images": [b64(JPEG), b64(PNG)]}).encode()
    response = request(creative, body, ct.JSON, "text/csv")
    assert response.content_type == ct.CSV
    lines = response.body.decode().splitlines()
    assert lines[0] == "appeal,clarity,calm"
    assert len(lines) == 3
    as_json = json.loads(request(creative, body, ct.JSON, ct.JSON).body)["scores"]
    for line, record in zip(lines[1:], as_json, strict=True):
        assert [float(v) for v in line.split(",")] == pytest.approx(list(record.values()))


def test_accept_npy_gives_the_score_matrix(creative: Chain) -> None:
    response = request(creative, JPEG, ct.JPEG, ct.NPY)
    assert response.content_type == ct.NPY
    array = np.load(io.BytesIO(response.body))
    assert array.shape == (1, 3)
    record = json.loads(request(creative, JPEG, ct.JPEG).body)["scores"][0]
    assert array[0].tolist() == pytest.approx(list(record.values()))


@pytest.mark.parametrize("accept", ["", "*/*", "application/*", "application/json; charset=utf-8"])
def test_wildcard_and_empty_accept_give_json(creative: Chain, accept: str) -> None:
    response = request(creative, JPEG, ct.JPEG, accept)
    assert response.content_type == ct.JSON
    assert "scores" in json.loads(response.body)


def test_configured_default_accept_is_used_for_wildcards(creative_dir: Path) -> None:
    chain = make_chain(creative_dir, default_accept=ct.CSV)
    response = request(chain, JPEG, ct.JPEG, "*/*")
    assert response.content_type == ct.CSV
    assert response.body.startswith(b"appeal,clarity\n")


def test_unsupported_accept_is_406_before_the_body_is_read(creative: Chain) -> None:
    with pytest.raises(UnsupportedAcceptError) as info:
        request(creative, b"not even an image", ct.JPEG, "image/png")
    assert info.value.status_code == 406
    assert "'image/png'" in info.value.message


def test_unsupported_content_type_is_415(creative: Chain) -> None:
    with pytest.raises(UnsupportedContentTypeError) as info:
        request(creative, b"<xml/>", "application/xml")
    assert info.value.status_code == 415


def test_corrupt_image_is_400(creative: Chain) -> None:
    with pytest.raises(BadRequestError):
        request(creative, JPEG[: len(JPEG) // 2], ct.JPEG)


def test_tensor_of_the_wrong_shape_for_an_image_model_is_400(creative: Chain) -> None:
    with pytest.raises(BadRequestError, match="was rejected by the model"):
        request(creative, b"[[1, 2, 3, 4]]", ct.JSON)


def test_chain_without_user_code_has_no_customised_hooks(creative: Chain) -> None:
    assert creative.customised == []
    assert creative.transform_fn is None


def test_the_loaded_model_carries_the_input_spec(creative: Chain) -> None:
    assert isinstance(creative.model, LoadedModel)
    assert creative.input_spec is creative.model.spec.input
    assert creative.input_spec.size == 64  # the test model's, not the ImageNet default


def test_load_keeps_the_model_warm_up_returns(
    creative_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m")
    chain = Chain.for_model_dir(creative_dir, defaults)
    served = object()
    monkeypatch.setattr(defaults, "warm_up", lambda model: served)
    assert chain.load(creative_dir) is served
    assert chain.model is served
    assert chain.input_spec == InputSpec()  # not a LoadedModel: the ImageNet default


# --- tensors through a bare TorchScript model -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[[1, 2, 3, 4]]", ct.JSON),
        (b'{"instances": [[1, 2, 3, 4]]}', ct.JSON),
        (b"1,2,3,4\n1,2,3,4\n", ct.CSV),
    ],
)
def test_tensor_inputs_give_exact_outputs(affine: Chain, body: bytes, content_type: str) -> None:
    out = json.loads(request(affine, body, content_type, ct.JSON).body)
    assert out[0] == [1.5, 8.0]
    assert all(row == [1.5, 8.0] for row in out)


def test_single_csv_row_is_a_vector(affine: Chain) -> None:
    assert json.loads(request(affine, b"1,2,3,4", ct.CSV).body) == [1.5, 8.0]
    assert request(affine, b"1,2,3,4", ct.CSV, ct.CSV).body == b"1.5,8.0\n"


def test_npy_in_npy_out(affine: Chain) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([[1, 2, 3, 4], [0, 0, 0, 0]], dtype=np.float64))
    response = request(affine, buf.getvalue(), ct.NPY, ct.NPY)
    assert response.content_type == ct.NPY
    assert np.load(io.BytesIO(response.body)).tolist() == [[1.5, 8.0], [0.5, -1.0]]


def test_tensor_as_csv(affine: Chain) -> None:
    response = request(affine, b"[[1, 2, 3, 4], [1, 1, 1, 1]]", ct.JSON, "text/csv")
    assert response.body == b"1.5,8.0\n1.5,2.0\n"


def test_tensor_the_model_rejects_is_400(affine: Chain) -> None:
    with pytest.raises(BadRequestError) as info:
        request(affine, b"[[1, 2, 3]]", ct.JSON)
    assert "shape (1, 3)" in info.value.message


def test_bare_torchscript_image_model_answers_with_generic_heads(tmp_path: Path) -> None:
    class ChannelMeans(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    model_dir = tmp_path / "bare"
    model_dir.mkdir()
    torch.jit.script(ChannelMeans()).save(str(model_dir / "model.pt"))
    chain = make_chain(model_dir)
    payload = json.loads(request(chain, JPEG, ct.JPEG).body)
    assert list(payload["scores"][0]) == ["score_0", "score_1", "score_2"]
    assert (payload["model"], payload["version"]) == ("m", "0")
    assert chain.model.head_names == ["score_0", "score_1", "score_2"]


@pytest.mark.usefixtures("clean_imports")
def test_a_user_model_fn_loading_through_other_defaults_decodes_for_its_spec(
    creative_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = add_code(
        creative_dir,
        """
        import torch
        from scorer.inference.defaults import CreativeScoringDefaults

        def model_fn(model_dir):
            own = CreativeScoringDefaults(torch.device("cpu"), allow_pickle=False, model_name="x")
            return own.model_fn(model_dir)
        """,
    )
    chain = make_chain(model_dir)
    assert chain.customised == ["model_fn"]
    assert chain.input_spec.size == 64  # the chain's defaults never saw this model load
    targets = []
    real = codecs.decode

    def spy(body: bytes, content_type: str, target: int | None, *rest: object) -> object:
        targets.append(target)
        return real(body, content_type, target, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(codecs, "decode", spy)
    assert "scores" in json.loads(request(chain, JPEG, ct.JPEG).body)
    assert targets == [72]  # the model's resize, not the ImageNet default's 256


# --- user hooks ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_imports")
def test_user_output_fn_returning_body_and_content_type(creative_dir: Path) -> None:
    model_dir = add_code(
        creative_dir,
        """
        import json

        def output_fn(prediction, accept):
            body = json.dumps({"n": len(prediction.records()), "accept": accept})
            return body, "application/vnd.x"
        """,
    )
    chain = make_chain(model_dir)
    assert chain.customised == ["output_fn"]
    response = request(chain, JPEG, ct.JPEG, "text/csv")
    assert response.content_type == "application/vnd.x"
    assert json.loads(response.body) == {"n": 1, "accept": "text/csv"}


@pytest.mark.usefixtures("clean_imports")
def test_user_output_fn_may_answer_an_accept_scorer_does_not_know(creative_dir: Path) -> None:
    model_dir = add_code(
        creative_dir,
        """
        def output_fn(prediction, accept):
            return "<scores n='%d'/>" % len(prediction.records())
        """,
    )
    response = request(make_chain(model_dir), JPEG, ct.JPEG, "Application/XML; q=1")
    assert response.content_type == "application/xml"
    assert response.body == b"<scores n='1'/>"


@pytest.mark.usefixtures("clean_imports")
def test_user_output_fn_returning_an_object_is_encoded_as_json(creative_dir: Path) -> None:
    model_dir = add_code(
        creative_dir,
        """
        def output_fn(prediction, accept):
            return {"heads": prediction.head_names}
        """,
    )
    response = request(make_chain(model_dir), JPEG, ct.JPEG, ct.JSON)
    assert json.loads(response.body) == {"heads": ["appeal", "clarity"]}


@pytest.mark.usefixtures("clean_imports")
@pytest.mark.parametrize("accept", [ct.JSON, ct.CSV, ct.NPY])
def test_user_output_fn_returning_the_prediction_is_encoded_like_the_defaults(
    creative_dir: Path, accept: str
) -> None:
    reference = request(make_chain(creative_dir), JPEG, ct.JPEG, accept)
    model_dir = add_code(
        creative_dir,
        """
        def output_fn(prediction, accept):
            return prediction
        """,
    )
    response = request(make_chain(model_dir), JPEG, ct.JPEG, accept)
    assert (response.body, response.content_type) == (reference.body, reference.content_type)


@pytest.mark.usefixtures("clean_imports")
def test_user_output_fn_returning_a_tensor_and_type_is_encoded_once(affine_dir: Path) -> None:
    model_dir = add_code(
        affine_dir,
        """
        def output_fn(prediction, accept):
            return prediction, "text/vnd.numbers"
        """,
    )
    response = request(make_chain(model_dir), b"1,2,3,4\n", ct.CSV, ct.CSV)
    assert (response.body, response.content_type) == (b"1.5,8.0\n", "text/vnd.numbers")


def test_an_encoder_registered_for_a_type_serves_that_accept(
    affine: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders = codecs.CodecRegistry(codecs._unsupported_accept)
    for media_type in codecs.ENCODERS:
        encoders.register(media_type, codecs.ENCODERS[media_type])
    encoders.register("text/plain", lambda value: repr(value.tolist()).encode())
    monkeypatch.setattr(codecs, "ENCODERS", encoders)
    response = request(affine, b"[[1, 2, 3, 4]]", ct.JSON, "text/plain")
    assert (response.body, response.content_type) == (b"[[1.5, 8.0]]", "text/plain")


@pytest.mark.usefixtures("clean_imports")
def test_user_output_fn_gets_one_media_type_from_a_list(creative_dir: Path) -> None:
    model_dir = add_code(
        creative_dir,
        """
        def output_fn(prediction, accept):
            return accept
        """,
    )
    response = request(make_chain(model_dir), JPEG, ct.JPEG, "application/xml, text/html")
    assert response.content_type == "application/xml"


@pytest.mark.usefixtures("clean_imports")
def test_user_transform_fn_replaces_the_whole_chain(empty_dir: Path) -> None:
    model_dir = add_code(
        empty_dir,
        """
        import json

        def model_fn(model_dir):
            return "transform-model"

        def transform_fn(model, data, content_type, accept):
            return json.dumps({"model": model, "bytes": len(data), "type": content_type}), accept
        """,
    )
    chain = make_chain(model_dir)
    assert chain.customised == ["model_fn", "transform_fn"]
    response = request(chain, b"abc", "Text/Plain; charset=utf-8", "*/*")
    assert response.content_type == ct.JSON
    assert json.loads(response.body) == {
        "model": "transform-model",
        "bytes": 3,
        "type": "text/plain",
    }


@pytest.mark.usefixtures("clean_imports")
def test_hooks_that_ask_for_the_context_get_it(empty_dir: Path) -> None:
    model_dir = add_code(
        empty_dir,
        """
        import json

        def model_fn(model_dir, context):
            return {"loaded_with_context": context is not None}

        def input_fn(body, content_type, context):
            return {"n": len(body), "tag": context.attribute("tag"), "id": context.request_id}

        def predict_fn(data, model):
            return {**data, **model}

        def output_fn(prediction, accept, context):
            context.response_custom_attributes = "echo=" + str(prediction["tag"])
            return json.dumps(prediction), "application/json"
        """,
    )
    defaults = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m")
    chain = Chain.for_model_dir(model_dir, defaults)
    chain.load(model_dir, RequestContext(model_name="m"))
    ctx = RequestContext(
        model_name="m", content_type=ct.JSON, headers={CUSTOM_ATTRIBUTES: "tag=blue;x=1"},
        request_id="req-9",
    )  # fmt: skip
    response = chain.transform(b"12345", ctx)
    assert json.loads(response.body) == {
        "n": 5, "tag": "blue", "id": "req-9", "loaded_with_context": True,
    }  # fmt: skip
    assert ctx.response_custom_attributes == "echo=blue"


@pytest.mark.usefixtures("clean_imports")
def test_aws_style_model_fn_only_uses_the_tensor_defaults(affine_dir: Path) -> None:
    model_dir = add_code(
        affine_dir,
        """
        import os
        import torch

        def model_fn(model_dir):
            return torch.jit.load(os.path.join(model_dir, "model.pt"))
        """,
    )
    chain = make_chain(model_dir)
    assert chain.customised == ["model_fn"]
    assert json.loads(request(chain, b"[[1, 2, 3, 4]]", ct.JSON).body) == [[1.5, 8.0]]
    assert request(chain, b"1,2,3,4\n", ct.CSV, ct.CSV).body == b"1.5,8.0\n"


@pytest.mark.usefixtures("clean_imports")
def test_program_name_selects_the_script(affine_dir: Path) -> None:
    model_dir = affine_dir
    code = model_dir / "code"
    code.mkdir()
    (code / "serve.py").write_text(
        "def transform_fn(model, data, content_type, accept):\n    return b'serve.py'\n"
    )
    (code / "inference.py").write_text(
        "def transform_fn(model, data, content_type, accept):\n    return b'inference.py'\n"
    )
    assert request(make_chain(model_dir), b"x").body == b"inference.py"
    assert request(make_chain(model_dir, program="serve.py"), b"x").body == b"serve.py"

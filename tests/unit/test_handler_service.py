"""scorer.serving.handler_service: MMS batches in, per-request statuses and bodies out."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mms
import pytest
import torch
from mms.context import Context
from mms.service import Service

from scorer.config import load_config
from scorer.errors import ModelLoadError
from scorer.inference import content_types as ct
from scorer.inference.context import CUSTOM_ATTRIBUTES, MAX_CUSTOM_ATTRIBUTES
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.models.loading import LoadedModel
from scorer.serving import handler_service
from scorer.serving.handler_service import HandlerService
from scorer.serving.resources import choose_forward_threads
from tests.support.models import add_code, creative_model_dir, image_bytes

JPEG = image_bytes("JPEG", (96, 80), seed=4)

# One script whose behaviour each request picks with `X-Amzn-SageMaker-Custom-Attributes: mode=...`
HOOKS = """
import json

import torch
from scorer.errors import BadRequestError

def input_fn(body, content_type, context):
    mode = context.attribute("mode")
    if mode == "crlf":
        raise BadRequestError("bad\\r\\nrequest\\rhere")
    if mode == "long":
        raise BadRequestError("x" * 500)
    if mode == "boom":
        raise RuntimeError("secret-detail-42 in /opt/ml/model/code")
    if mode == "oom":
        raise MemoryError("host memory exhausted")
    if mode == "cuda-oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")
    return {"n": len(body), "type": content_type, "mode": mode}

def predict_fn(data, model):
    return data

def output_fn(prediction, accept, context):
    if prediction["mode"] == "attrs":
        context.response_custom_attributes = "a=1\\r\\nb=2;" + "x" * 2000
    elif prediction["mode"] == "echo":
        context.response_custom_attributes = "echo=" + context.request_id
    return json.dumps(prediction), "application/json"
"""


# A model_fn-only script (the default tensor chain serves it): the spec's model (16x16 RGB
# input declared), whose forward pass fails by the input's first value, as models do inside.
FAULTY_MODEL = """
from pathlib import Path

import torch
from scorer.models.loading import load_model

class Faulty(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        first = float(x.flatten()[0])
        if first == 1.0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if first == 2.0:
            raise RuntimeError("secret-detail-42: CUDA error: an illegal memory access")
        return self.network(x)

def model_fn(model_dir):
    model = load_model(Path(model_dir), torch.device("cpu"), name="f")
    model.network = Faulty(model.network)
    return model
"""


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SCORER_DEVICE": "cpu",
        "SCORER_RUN_DIR": str(tmp_path / "run"),
        "SCORER_THREADS_PER_WORKER": "1",  # tiny models; no contention on a shared machine
        **extra,
    }


def mms_request(
    body: bytes | str, content_type: str | None = ct.JPEG, **headers: str
) -> dict[str, Any]:
    """One request as the MMS frontend sends it to a Python worker."""
    params = [{"name": "body", "contentType": content_type or "", "value": body}]
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    return {
        "parameters": params,
        "headers": [{"name": k.encode(), "value": v.encode()} for k, v in names.items()],
    }


def call(service: HandlerService, *requests: dict[str, Any]) -> tuple[list[bytes], Context]:
    """Run a batch through MMS's own request decoding and Context, then the handler."""
    batch = [{"requestId": f"req-{i}".encode(), **r} for i, r in enumerate(requests)]
    processors, inputs, ids = Service.retrieve_data_for_inference(batch)
    ctx = Context("m", str(service.model_dir), None, len(batch), None, mms.__version__)
    ctx.request_ids = ids
    ctx.request_processor = processors
    return service.handle(inputs, ctx), ctx


def status(ctx: Context, idx: int = 0) -> tuple[int, str | None]:
    return ctx.get_response_status(idx)


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)




@pytest.fixture(scope="module")
def creative(tmp_path_factory: pytest.TempPathFactory) -> HandlerService:
    root = tmp_path_factory.mktemp("creative")
    model_dir = creative_model_dir(root, "m")
    service = HandlerService(load_config(env(root)), "m", model_dir, None)
    service.initialize()
    return service


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory, restore_imports: None) -> HandlerService:
    root = tmp_path_factory.mktemp("hooks")
    model_dir = add_code(creative_model_dir(root, "h"), HOOKS)
    service = HandlerService(load_config(env(root)), "h", model_dir, None)
    service.initialize()
    return service


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, restore_imports: None) -> HandlerService:
    root = tmp_path_factory.mktemp("faulty")
    model_dir = add_code(creative_model_dir(root, "f", size=16), FAULTY_MODEL)
    service = HandlerService(load_config(env(root)), "f", model_dir, None)
    service.initialize()
    return service


def tensor_request(shape: tuple[int, ...], first: float = 0.5) -> dict[str, Any]:
    values = torch.full(shape, 0.5)
    values.view(-1)[0] = first
    return mms_request(json.dumps(values.tolist()), ct.JSON)


# --- loading ------------------------------------------------------------------------------------


def test_initialize_loads_the_chain_on_cpu(creative: HandlerService) -> None:
    assert creative.device == torch.device("cpu")
    assert creative.chain is not None
    assert isinstance(creative.chain.model, LoadedModel)
    assert creative.chain.model.head_names == ["appeal", "clarity"]


def test_initialize_imports_user_hooks(hooks: HandlerService) -> None:
    assert hooks.chain is not None
    assert hooks.chain.customised == ["input_fn", "output_fn", "predict_fn"]


def test_multi_model_refuses_a_dir_outside_the_models_root(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path / "elsewhere", "m")
    root = tmp_path / "models"
    root.mkdir()
    config = load_config(env(tmp_path, SAGEMAKER_MULTI_MODEL="true", SCORER_MODELS_ROOT=str(root)))
    service = HandlerService(config, "m", model_dir, None)
    with pytest.raises(ModelLoadError) as info:
        service.initialize()
    assert "outside the models root" in info.value.message
    assert str(root.resolve()) in info.value.message
    assert "SCORER_MODELS_ROOT" in info.value.message
    assert service.chain is None


def test_multi_model_refuses_a_symlink_escaping_the_models_root(tmp_path: Path) -> None:
    outside = creative_model_dir(tmp_path / "elsewhere", "m")
    root = tmp_path / "models"
    root.mkdir()
    (root / "m").symlink_to(outside, target_is_directory=True)
    config = load_config(env(tmp_path, SAGEMAKER_MULTI_MODEL="true", SCORER_MODELS_ROOT=str(root)))
    with pytest.raises(ModelLoadError, match="outside the models root"):
        HandlerService(config, "m", root / "m", None).check_model_dir()


def test_multi_model_refuses_dot_dot_out_of_the_models_root(tmp_path: Path) -> None:
    creative_model_dir(tmp_path, "m")
    root = tmp_path / "models"
    root.mkdir()
    config = load_config(env(tmp_path, SAGEMAKER_MULTI_MODEL="true", SCORER_MODELS_ROOT=str(root)))
    sneaky = root / ".." / "m" / "model"
    with pytest.raises(ModelLoadError, match="outside the models root"):
        HandlerService(config, "m", sneaky, None).check_model_dir()


def test_multi_model_loads_a_dir_under_the_models_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    model_dir = creative_model_dir(root, "m")
    config = load_config(env(tmp_path, SAGEMAKER_MULTI_MODEL="true", SCORER_MODELS_ROOT=str(root)))
    service = HandlerService(config, "m", model_dir, None)
    service.initialize()
    responses, ctx = call(service, mms_request(JPEG, **{"Content-Type": ct.JPEG}))
    assert status(ctx) == (200, None)
    assert "scores" in json.loads(responses[0])


def test_single_model_mode_does_not_check_the_models_root(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path / "elsewhere", "m")
    config = load_config(env(tmp_path, SCORER_MODELS_ROOT=str(tmp_path / "models")))
    HandlerService(config, "m", model_dir, None).check_model_dir()  # no error


def test_initialize_applies_the_thread_budget(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = load_config({**env(tmp_path), "SCORER_THREADS_PER_WORKER": "3"})
    try:
        with pytest.raises(ModelLoadError):  # threads are set before the model loads
            HandlerService(config, "m", empty, None).initialize()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)


def test_initialize_passes_an_image_pool_of_the_thread_budget_to_the_chain(
    tmp_path: Path,
) -> None:
    config = load_config({**env(tmp_path), "SCORER_THREADS_PER_WORKER": "2"})
    service = HandlerService(config, "m", creative_model_dir(tmp_path, "m"), None)
    try:
        service.initialize()
        assert service.chain is not None
        pool = service.chain.defaults.pool
        assert isinstance(pool, ImagePool) and pool is not SERIAL
        assert pool.threads == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(1)
        if service.chain is not None:
            service.chain.defaults.pool.close()


def test_a_broken_model_fails_initialize_with_a_load_error(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"found: weights\.bin"):
        HandlerService(load_config(env(tmp_path)), "m", model_dir, None).initialize()


# --- success ------------------------------------------------------------------------------------


def test_image_request_gets_scores_and_content_type(creative: HandlerService) -> None:
    responses, ctx = call(creative, mms_request(JPEG, **{"Content-Type": ct.JPEG}))
    assert len(responses) == 1
    payload = json.loads(responses[0])
    assert list(payload["scores"][0]) == ["appeal", "clarity"]
    assert status(ctx) == (200, None)
    assert ctx.get_response_content_type(0) == ct.JSON
    assert CUSTOM_ATTRIBUTES not in ctx.get_response_headers(0)


def test_accept_header_is_honoured_whatever_its_case(creative: HandlerService) -> None:
    responses, ctx = call(
        creative, mms_request(JPEG, **{"Content-Type": ct.JPEG, "ACCEPT": "text/csv"})
    )
    assert ctx.get_response_content_type(0) == ct.CSV
    assert responses[0].startswith(b"appeal,clarity\n")


def test_content_type_falls_back_to_the_body_parameter(creative: HandlerService) -> None:
    responses, ctx = call(creative, mms_request(JPEG, content_type="image/jpeg"))
    assert status(ctx) == (200, None)
    assert "scores" in json.loads(responses[0])


def test_body_under_another_parameter_name_is_found(creative: HandlerService) -> None:
    request = mms_request(JPEG, **{"Content-Type": ct.JPEG})
    request["parameters"][0]["name"] = "data"
    responses, ctx = call(creative, request)
    assert status(ctx) == (200, None)
    assert "scores" in json.loads(responses[0])


def test_text_body_is_encoded(creative: HandlerService) -> None:
    responses, ctx = call(creative, mms_request("[[1, 2]]", **{"Content-Type": ct.JSON}))
    assert status(ctx)[0] == 400  # decoded as a tensor, which the image model rejects
    assert json.loads(responses[0])["type"] == "BadRequestError"


# --- client errors ------------------------------------------------------------------------------


def error_body(response: bytes) -> dict[str, Any]:
    text = response.decode()
    assert "Traceback" not in text
    body = json.loads(text)
    assert set(body) == {"code", "type", "message", "request_id"}
    return body


@pytest.mark.parametrize(
    ("request_kwargs", "code", "error_type"),
    [
        ({"body": JPEG[:200], "Content-Type": ct.JPEG}, 400, "BadRequestError"),
        ({"body": b"", "Content-Type": ct.JPEG}, 400, "BadRequestError"),
        ({"body": b"{", "Content-Type": ct.JSON}, 400, "BadRequestError"),
        ({"body": b"<x/>", "Content-Type": "application/xml"}, 415, "UnsupportedContentTypeError"),
        ({"body": JPEG, "Content-Type": ct.JPEG, "Accept": "image/png"}, 406,
         "UnsupportedAcceptError"),
    ],
)  # fmt: skip
def test_client_errors_set_status_phrase_and_json_body(
    creative: HandlerService, request_kwargs: dict[str, Any], code: int, error_type: str
) -> None:
    kwargs = dict(request_kwargs)
    body = kwargs.pop("body")
    responses, ctx = call(creative, mms_request(body, content_type=None, **kwargs))
    payload = error_body(responses[0])
    assert payload["code"] == code
    assert payload["type"] == error_type
    assert payload["request_id"] == "req-0"
    assert status(ctx) == (code, payload["message"][:200])
    assert ctx.get_response_content_type(0) == ct.JSON


def test_phrase_has_no_cr_or_lf(hooks: HandlerService) -> None:
    responses, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: "mode=crlf"}))
    code, phrase = status(ctx)
    assert code == 400
    assert phrase == "bad  request here"
    assert error_body(responses[0])["message"] == "bad\r\nrequest\rhere"


def test_phrase_is_truncated(hooks: HandlerService) -> None:
    responses, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: "mode=long"}))
    assert status(ctx) == (400, "x" * 200)
    assert error_body(responses[0])["message"] == "x" * 500


# --- server faults ------------------------------------------------------------------------------


def test_unexpected_exception_is_500_without_leaking_details(hooks: HandlerService) -> None:
    responses, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: "mode=boom"}))
    code, phrase = status(ctx)
    assert code == 500
    body = error_body(responses[0])
    assert body["code"] == 500
    assert body["type"] == "ScorerError"
    assert body["message"] == (
        "internal error while scoring with model h; see the model server log"
    )
    for text in (responses[0].decode(), phrase or ""):
        assert "secret-detail-42" not in text
        assert "RuntimeError" not in text
        assert "/opt/ml" not in text


@pytest.mark.parametrize("mode", ["oom", "cuda-oom"])
def test_out_of_memory_is_507(hooks: HandlerService, mode: str) -> None:
    responses, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: f"mode={mode}"}))
    body = error_body(responses[0])
    assert status(ctx)[0] == 507
    assert body["code"] == 507
    assert body["type"] == "InsufficientMemoryError"
    assert body["message"] == "model h ran out of memory scoring this request"
    assert "20 GiB" not in responses[0].decode()


def test_cuda_out_of_memory_in_the_default_tensor_forward_pass_is_507(
    faulty: HandlerService,
) -> None:
    responses, ctx = call(faulty, tensor_request((1, 3, 16, 16), first=1.0))
    body = error_body(responses[0])
    assert status(ctx)[0] == 507
    assert (body["code"], body["type"]) == (507, "InsufficientMemoryError")
    assert body["message"] == "model f ran out of memory scoring this request"
    assert "20.00 GiB" not in responses[0].decode()


def test_internal_fault_in_the_default_tensor_forward_pass_is_500(faulty: HandlerService) -> None:
    responses, ctx = call(faulty, tensor_request((1, 3, 16, 16), first=2.0))
    body = error_body(responses[0])
    assert status(ctx)[0] == 500
    assert (body["code"], body["type"]) == (500, "ScorerError")
    assert body["message"] == "internal error while scoring with model f; see the model server log"
    assert "secret-detail-42" not in responses[0].decode()


def test_tensor_not_the_declared_input_is_400_naming_the_shape(faulty: HandlerService) -> None:
    responses, ctx = call(faulty, tensor_request((1, 3, 8, 8), first=1.0))  # never reaches OOM
    body = error_body(responses[0])
    assert status(ctx)[0] == 400
    assert body["message"] == (
        "input tensor of shape (1, 3, 8, 8) was rejected by the model: its spec declares "
        "(batch, 3, 16, 16) images"
    )


def test_the_faulty_model_serves_its_declared_input(faulty: HandlerService) -> None:
    responses, ctx = call(
        faulty, tensor_request((2, 3, 16, 16)), tensor_request((1, 3, 16, 16), 2.0)
    )
    assert [status(ctx, i)[0] for i in range(2)] == [200, 500]
    scores = json.loads(responses[0])
    assert len(scores) == 2 and all(len(row) == 2 for row in scores)


# --- custom attributes --------------------------------------------------------------------------


def test_request_custom_attributes_reach_the_hooks(hooks: HandlerService) -> None:
    responses, ctx = call(
        hooks,
        mms_request(b"abcd", "text/plain", **{"X-Amzn-SageMaker-Custom-Attributes": "mode=x"}),
    )
    assert status(ctx) == (200, None)
    assert json.loads(responses[0]) == {"n": 4, "type": "text/plain", "mode": "x"}


def test_response_custom_attributes_header_is_set(hooks: HandlerService) -> None:
    _, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: "mode=echo"}))
    assert ctx.get_response_headers(0)[CUSTOM_ATTRIBUTES] == "echo=req-0"


def test_response_custom_attributes_are_cleaned_and_truncated(hooks: HandlerService) -> None:
    _, ctx = call(hooks, mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: "mode=attrs"}))
    value = ctx.get_response_headers(0)[CUSTOM_ATTRIBUTES]
    assert len(value) == MAX_CUSTOM_ATTRIBUTES == 1024
    assert "\r" not in value and "\n" not in value
    assert value == ("a=1  b=2;" + "x" * 2000)[:1024]


# --- batches ------------------------------------------------------------------------------------


def test_batch_with_one_bad_request_gets_per_index_statuses(creative: HandlerService) -> None:
    responses, ctx = call(
        creative,
        mms_request(JPEG, **{"Content-Type": ct.JPEG}),
        mms_request(b"definitely not a jpeg", **{"Content-Type": ct.JPEG}),
        mms_request(JPEG, **{"Content-Type": ct.JPEG, "Accept": ct.CSV}),
    )
    assert len(responses) == 3
    assert [status(ctx, i)[0] for i in range(3)] == [200, 400, 200]
    assert [ctx.get_response_content_type(i) for i in range(3)] == [ct.JSON, ct.JSON, ct.CSV]
    assert "scores" in json.loads(responses[0])
    assert error_body(responses[1])["request_id"] == "req-1"
    assert responses[2].startswith(b"appeal,clarity\n")


def test_batch_with_mixed_faults(hooks: HandlerService) -> None:
    modes = ["ok", "boom", "oom", "crlf", "echo"]
    requests = [mms_request(b"x", ct.JSON, **{CUSTOM_ATTRIBUTES: f"mode={m}"}) for m in modes]
    responses, ctx = call(hooks, *requests)
    assert len(responses) == len(modes)
    assert [status(ctx, i)[0] for i in range(len(modes))] == [200, 500, 507, 400, 200]
    assert CUSTOM_ATTRIBUTES not in ctx.get_response_headers(0)
    assert ctx.get_response_headers(4)[CUSTOM_ATTRIBUTES] == "echo=req-4"


# --- the module-level MMS entry point -----------------------------------------------------------


def test_handle_before_the_model_is_loaded_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_service, "_service", None)
    with pytest.raises(RuntimeError, match="before the model was loaded"):
        handler_service.handle([{"body": b"x"}], object())


def test_handle_delegates_to_the_loaded_service(
    creative: HandlerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_service, "_service", creative)
    batch = [{"requestId": b"req-0", **mms_request(JPEG, **{"Content-Type": ct.JPEG})}]
    processors, inputs, ids = Service.retrieve_data_for_inference(batch)
    ctx = Context("m", str(creative.model_dir), None, 1, None, mms.__version__)
    ctx.request_ids, ctx.request_processor = ids, processors
    assert handler_service.handle(None, ctx) is None  # already loaded: a no-op
    assert "scores" in json.loads(handler_service.handle(inputs, ctx)[0])


def test_run_dir_is_not_created_without_requirements(creative: HandlerService) -> None:
    assert not os.path.exists(creative.config.packages_dir)


def test_forward_threads_are_kept_only_where_they_speed_up_the_forward() -> None:
    """choose_forward_threads: measured, not assumed; slow models are not probed."""
    calls: list[int] = []

    def forward(cost_ms: dict[int, float]) -> Callable[[], object]:
        def run() -> object:
            threads = torch.get_num_threads()
            calls.append(threads)
            time.sleep(cost_ms[threads] / 1000)
            return None

        return run

    before = torch.get_num_threads()
    try:
        flat = forward({2: 4.0, 1: 4.2})  # a small model: the second thread gains nothing
        assert choose_forward_threads(flat, 2, warm_up_ms=10.0)[0] == 1
        assert torch.get_num_threads() == 2  # left at the budget: batches keep it
        scales = forward({2: 5.0, 1: 10.0})  # twice as fast with both
        chosen, measured = choose_forward_threads(scales, 2, warm_up_ms=10.0)
        assert chosen == 2 and torch.get_num_threads() == 2
        assert measured["forward_ms_1_thread"] >= 10.0 and measured["forward_ms_threads"] >= 5.0
        calls.clear()
        assert choose_forward_threads(flat, 2, warm_up_ms=75.0) == (2, {})  # not probed
        assert choose_forward_threads(flat, 1, warm_up_ms=10.0) == (1, {})
        assert calls == []
    finally:
        torch.set_num_threads(before)

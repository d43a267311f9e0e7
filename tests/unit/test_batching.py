"""scorer.inference.batching: an MMS batch of requests in one forward pass, each request
answered as it would be alone (through the real HandlerService and MMS's own Context)."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from scorer.config import load_config
from scorer.cpus import cpu_count
from scorer.errors import UserCodeError
from scorer.inference import content_types as ct
from scorer.inference.batching import Batcher, Forward, ForwardThreads, merge, plan, split
from scorer.inference.codecs import ImageBatch, Scores
from scorer.inference.context import CUSTOM_ATTRIBUTES
from scorer.inference.user_module import user_batch_hook
from scorer.serving.handler_service import HandlerService
from tests.support.models import add_code, creative_model_dir, image_bytes
from tests.unit.test_handler_service import call, env, mms_request, status

JPEGS = [image_bytes("JPEG", (96 + 8 * i, 80), seed=10 + i) for i in range(6)]
CORRUPT = JPEGS[0][:200]


def white_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (255, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()


# A model_fn script: the spec's model wrapped in one that fails by the batch it is given.
FAKE_MODEL = """
import time
from pathlib import Path

import torch
from scorer.models.loading import load_model

MODE = {mode!r}

class Fake(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        if MODE == "oom" and x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if MODE == "poison" and bool((x.flatten(1).mean(1) > 1.5).any()):
            raise RuntimeError("a white image poisons the whole batch")
        if MODE == "slow" and x.shape[0] > 1:
            time.sleep(1.5)
        return self.network(x)

def model_fn(model_dir):
    model = load_model(Path(model_dir), torch.device("cpu"), name="fake")
    model.network = Fake(model.network)
    return model
"""

# An AWS-toolkit script: no context, one request per call.
TOOLKIT = """
import json

CALLS = []

def input_fn(body, content_type):
    return {"n": len(body), "type": content_type}

def predict_fn(data, model):
    CALLS.append(data["n"])
    return data

def output_fn(prediction, accept):
    return json.dumps({**prediction, "calls": list(CALLS)})
"""

# A script that opts in to batches: the default input_fn, its own batch_predict_fn and
# an output_fn that sets each request's response custom attributes.
BATCH_HOOK = """
import json

CALLS = []

def batch_predict_fn(data_list, model, contexts):
    CALLS.append(len(data_list))
    if any(c.attribute("tag") == "bad" for c in contexts):
        raise RuntimeError("one bad request in the batch")
    return [
        {"images": len(d.images), "tag": c.attribute("tag")}
        for d, c in zip(data_list, contexts)
    ]

def output_fn(prediction, accept, context):
    context.response_custom_attributes = "echo=" + str(prediction["tag"])
    return json.dumps({**prediction, "calls": list(CALLS)}), "application/json"
"""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- fixtures and helpers -----------------------------------------------------------------------




def service_for(model_dir: Path, root: Path, **extra: str) -> HandlerService:
    service = HandlerService(
        load_config(env(root, **extra)), model_dir.parent.name, model_dir, None
    )
    service.initialize()
    return service


@pytest.fixture(scope="module")
def creative(tmp_path_factory: pytest.TempPathFactory) -> HandlerService:
    root = tmp_path_factory.mktemp("creative")
    return service_for(creative_model_dir(root, "m"), root)


def fake(root: Path, mode: str, **extra: str) -> HandlerService:
    model_dir = add_code(creative_model_dir(root, "f", size=16), FAKE_MODEL.format(mode=mode))
    return service_for(model_dir, root, **extra)


@pytest.fixture(scope="module")
def oom(tmp_path_factory: pytest.TempPathFactory, restore_imports: None) -> HandlerService:
    return fake(tmp_path_factory.mktemp("oom"), "oom")


@pytest.fixture(scope="module")
def poison(tmp_path_factory: pytest.TempPathFactory, restore_imports: None) -> HandlerService:
    return fake(tmp_path_factory.mktemp("poison"), "poison")


@pytest.fixture
def forwards(creative: HandlerService) -> Iterator[list[int]]:
    """The batch size of every forward pass of the creative model's network."""
    sizes: list[int] = []
    assert creative.chain is not None
    network: torch.nn.Module = creative.chain.model.network
    handle = network.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    yield sizes
    handle.remove()


def jpeg(body: bytes, **headers: str) -> dict[str, Any]:
    return mms_request(body, **{"Content-Type": ct.JPEG, **headers})


def json_images(*bodies: bytes, **headers: str) -> dict[str, Any]:
    payload = {"images": [base64.b64encode(b).decode() for b in bodies]}
    return mms_request(json.dumps(payload), **{"Content-Type": ct.JSON, **headers})


def scores(response: bytes) -> np.ndarray:
    rows = json.loads(response)["scores"]
    return np.array([list(row.values()) for row in rows], dtype=np.float64)


def alone(service: HandlerService, request: dict[str, Any]) -> np.ndarray:
    responses, ctx = call(service, request)
    assert status(ctx)[0] == 200
    return scores(responses[0])


def statuses(ctx: Any, n: int) -> list[int]:
    return [status(ctx, i)[0] for i in range(n)]


def last_forwards(service: HandlerService) -> list[Forward]:
    assert service.batcher is not None
    return service.batcher.last_forwards


# --- plan, merge, split -------------------------------------------------------------------------


def test_plan_packs_requests_in_order_up_to_the_image_limit() -> None:
    assert plan([1, 1, 1]) == [[0, 1, 2]]
    assert plan([3, 1, 1], max_images=4) == [[0, 1], [2]]
    assert plan([5, 1, 2, 2], max_images=4) == [[0], [1, 2], [3]]  # never split a request
    assert plan([]) == []


def test_merge_and_split_give_each_request_its_own_rows() -> None:
    images = [Image.new("RGB", (4, 4), (i, i, i)) for i in range(5)]
    merged, slices = merge([ImageBatch(images[:3], False), ImageBatch(images[3:], True)])
    assert merged.images == images and not merged.single
    assert slices == [slice(0, 3), slice(3, 5)]
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    parts = split(Scores(values, ["a", "b"], "m", "1"), slices)
    assert [p.values.tolist() for p in parts] == [values[:3].tolist(), values[3:].tolist()]
    assert all(p.head_names == ["a", "b"] and p.model == "m" for p in parts)
    with pytest.raises(ValueError, match="4 rows for 5 images"):
        split(Scores(values[:4], ["a", "b"], "m", "1"), slices)


# --- one forward pass ---------------------------------------------------------------------------


def test_n_image_requests_run_one_forward_with_the_scores_of_each_alone(
    creative: HandlerService, forwards: list[int]
) -> None:
    expected = [alone(creative, jpeg(body)) for body in JPEGS[:4]]
    forwards.clear()
    responses, ctx = call(creative, *(jpeg(body) for body in JPEGS[:4]))
    assert forwards == [4]
    assert last_forwards(creative) == [Forward((0, 1, 2, 3), 4, "images")]
    assert statuses(ctx, 4) == [200] * 4
    for response, want in zip(responses, expected, strict=True):
        got = scores(response)
        assert got.shape == (1, 2)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_each_forward_logs_its_batch_size(
    creative: HandlerService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scorer.batching")
    call(creative, *(jpeg(body) for body in JPEGS[:3]))
    events = [json.loads(r.message) for r in caplog.records if r.name == "scorer.batching"]
    assert [{k: v for k, v in e.items() if k != "time"} for e in events] == [
        {"event": "forward", "model": "m", "batch_requests": 3, "batch_images": 3,
         "kind": "images"},
    ]  # fmt: skip


def test_a_corrupt_image_is_400_alone_and_its_neighbours_score_as_alone(
    creative: HandlerService, forwards: list[int]
) -> None:
    expected = [alone(creative, jpeg(body)) for body in JPEGS[1:3]]
    forwards.clear()
    responses, ctx = call(creative, jpeg(CORRUPT), jpeg(JPEGS[1]), jpeg(JPEGS[2]))
    assert statuses(ctx, 3) == [400, 200, 200]
    assert json.loads(responses[0])["request_id"] == "req-0"
    assert forwards == [2]
    for response, want in zip(responses[1:], expected, strict=True):
        np.testing.assert_allclose(scores(response), want, atol=1e-4, rtol=0)


def test_each_request_keeps_its_own_accept_and_error_statuses(creative: HandlerService) -> None:
    expected = [alone(creative, jpeg(body)) for body in JPEGS[:3]]
    responses, ctx = call(
        creative,
        jpeg(JPEGS[0], Accept=ct.CSV),
        jpeg(JPEGS[1]),
        jpeg(JPEGS[2], Accept=ct.NPY),
        jpeg(JPEGS[3], Accept="image/png"),
        mms_request(b"<x/>", **{"Content-Type": "application/xml"}),
    )
    assert statuses(ctx, 5) == [200, 200, 200, 406, 415]
    kinds = [ctx.get_response_content_type(i) for i in range(5)]
    assert kinds == [ct.CSV, ct.JSON, ct.NPY, ct.JSON, ct.JSON]
    header, *rows = responses[0].decode().splitlines()
    assert header == "appeal,clarity"
    csv = np.array([[float(v) for v in row.split(",")] for row in rows])
    np.testing.assert_allclose(csv, expected[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores(responses[1]), expected[1], atol=1e-4, rtol=0)
    npy = np.load(io.BytesIO(responses[2]), allow_pickle=False)
    np.testing.assert_allclose(npy, expected[2], atol=1e-4, rtol=0)
    assert last_forwards(creative) == [Forward((0, 1, 2), 3, "images")]
    assert all(CUSTOM_ATTRIBUTES not in ctx.get_response_headers(i) for i in range(5))


def test_a_json_batch_is_merged_with_single_images_and_answered_with_its_own(
    creative: HandlerService, forwards: list[int]
) -> None:
    each = [alone(creative, jpeg(body))[0] for body in JPEGS[:5]]
    forwards.clear()
    responses, ctx = call(
        creative,
        jpeg(JPEGS[0]),
        json_images(JPEGS[1], JPEGS[2], JPEGS[3]),
        jpeg(JPEGS[4], Accept=ct.CSV),
    )
    assert statuses(ctx, 3) == [200, 200, 200]
    assert forwards == [5]
    assert last_forwards(creative) == [Forward((0, 1, 2), 5, "images")]
    np.testing.assert_allclose(scores(responses[0]), [each[0]], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores(responses[1]), each[1:4], atol=1e-4, rtol=0)
    assert len(responses[2].decode().splitlines()) == 2  # header + its one image


def test_tensor_requests_run_one_by_one_beside_the_images(creative: HandlerService) -> None:
    tensor = mms_request(json.dumps(torch.zeros(1, 3, 64, 64).tolist()), ct.JSON)
    small = mms_request(json.dumps([[1.0, 2.0]]), ct.JSON)
    responses, ctx = call(creative, tensor, jpeg(JPEGS[0]), small, jpeg(JPEGS[1]))
    assert statuses(ctx, 4) == [200, 200, 400, 200]
    assert last_forwards(creative) == [
        Forward((1, 3), 2, "images"), Forward((0,), 0, "tensor"), Forward((2,), 0, "tensor"),
    ]  # fmt: skip
    assert np.array(json.loads(responses[0])).shape == (1, 2)


def test_images_beyond_the_forward_limit_take_another_forward(creative: HandlerService) -> None:
    assert creative.chain is not None
    creative.batcher = Batcher(creative.chain, max_images=3)
    try:
        _, ctx = call(creative, json_images(*JPEGS[:2]), jpeg(JPEGS[2]), jpeg(JPEGS[3]))
        assert statuses(ctx, 3) == [200] * 3
        assert [f.requests for f in last_forwards(creative)] == [(0, 1), (2,)]
    finally:
        creative.batcher = None


def test_one_image_passes_run_on_their_thread_count_and_batches_on_the_budget(
    creative: HandlerService,
) -> None:
    """ForwardThreads: a pass of one image (a bare one, or a JSON request of one) gets
    ``one_image`` torch threads; a pass of several images and a tensor request ``batch``."""
    assert creative.chain is not None
    seen: list[tuple[int, int]] = []  # (images in the pass, torch threads during it)
    network: torch.nn.Module = creative.chain.model.network
    handle = network.register_forward_hook(
        lambda m, args, out: seen.append((args[0].shape[0], torch.get_num_threads()))
    )
    before = torch.get_num_threads()
    creative.batcher = Batcher(creative.chain, threads=ForwardThreads(one_image=1, batch=2))
    try:
        tensor = mms_request(json.dumps(torch.zeros(1, 3, 64, 64).tolist()), ct.JSON)
        for batch in [jpeg(JPEGS[0])], [jpeg(JPEGS[1]), jpeg(JPEGS[2])], [json_images(JPEGS[3])]:
            _, ctx = call(creative, *batch)
            assert statuses(ctx, len(batch)) == [200] * len(batch)
        _, ctx = call(creative, tensor)
        assert statuses(ctx, 1) == [200]
        assert seen == [(1, 1), (2, 2), (1, 1), (1, 2)]
    finally:
        handle.remove()
        creative.batcher = None
        torch.set_num_threads(before)


def test_a_worker_whose_one_image_pass_keeps_one_thread_batches_on_all_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no thread count configured, the load's probe decides the one-image passes only;
    the batcher gets both counts (the probe is timing: here it is replaced by its verdict)."""
    if cpu_count() < 2:
        pytest.skip("needs 2 CPUs: the thread budget is the CPU count")
    import scorer.serving.handler_service as handler_module

    monkeypatch.setattr(
        handler_module, "choose_forward_threads", lambda forward, threads, warm_up_ms: (1, {"x": 1})
    )
    before = torch.get_num_threads()
    try:
        service = HandlerService(
            load_config({"SCORER_DEVICE": "cpu", "SCORER_RUN_DIR": str(tmp_path / "run")}),
            "m", creative_model_dir(tmp_path, "m"), None,
        )  # fmt: skip
        service.initialize()
        assert service.forward_threads == ForwardThreads(one_image=1, batch=cpu_count())
        _, ctx = call(service, jpeg(JPEGS[0]))
        assert statuses(ctx, 1) == [200]
        assert service.batcher is not None and service.batcher.threads is service.forward_threads
    finally:
        torch.set_num_threads(before)


# --- failures in the shared forward pass --------------------------------------------------------


def test_out_of_memory_in_the_stacked_forward_is_retried_one_request_at_a_time(
    oom: HandlerService,
) -> None:
    expected = [alone(oom, jpeg(body)) for body in JPEGS[:3]]
    responses, ctx = call(oom, *(jpeg(body) for body in JPEGS[:3]))
    assert statuses(ctx, 3) == [200, 200, 200]
    assert [f.images for f in last_forwards(oom)] == [3, 1, 1, 1]
    for response, want in zip(responses, expected, strict=True):
        np.testing.assert_allclose(scores(response), want, atol=1e-4, rtol=0)


def test_only_a_request_that_still_does_not_fit_alone_is_507(oom: HandlerService) -> None:
    responses, ctx = call(oom, json_images(JPEGS[0], JPEGS[1]), jpeg(JPEGS[2]), jpeg(JPEGS[3]))
    assert statuses(ctx, 3) == [507, 200, 200]
    body = json.loads(responses[0])
    assert body["type"] == "InsufficientMemoryError"
    assert body["message"] == "model f ran out of memory scoring this request"
    assert "scores" in json.loads(responses[1])


def test_a_request_the_model_fails_on_does_not_fail_its_neighbours(
    poison: HandlerService,
) -> None:
    expected = [alone(poison, jpeg(body)) for body in JPEGS[:2]]
    white = mms_request(white_png(), ct.PNG)
    responses, ctx = call(poison, jpeg(JPEGS[0]), white, jpeg(JPEGS[1]))
    assert statuses(ctx, 3) == [200, 500, 200]
    assert [f.requests for f in last_forwards(poison)] == [(0, 1, 2), (0,), (1,), (2,)]
    np.testing.assert_allclose(scores(responses[0]), expected[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores(responses[2]), expected[1], atol=1e-4, rtol=0)
    assert "poisons" not in responses[1].decode()


def test_an_overrunning_batch_answers_504_to_each_request(
    tmp_path: Path, restore_imports: None
) -> None:
    slow = fake(tmp_path, "slow", SAGEMAKER_MODEL_SERVER_TIMEOUT="1")
    responses, ctx = call(slow, *(jpeg(body) for body in JPEGS[:3]))
    assert statuses(ctx, 3) == [504, 504, 504]
    assert [json.loads(r)["request_id"] for r in responses] == ["req-0", "req-1", "req-2"]
    assert all(json.loads(r)["type"] == "RequestTimeoutError" for r in responses)


# --- user scripts -------------------------------------------------------------------------------


def test_a_toolkit_script_runs_per_request_unchanged(tmp_path: Path, restore_imports: None) -> None:
    service = service_for(add_code(creative_model_dir(tmp_path, "t", size=16), TOOLKIT), tmp_path)
    assert service.chain is not None and service.chain.batching == "none"
    responses, ctx = call(
        service,
        mms_request(b"a", "text/plain"),
        mms_request(b"bb", ct.JSON),
        mms_request(b"ccc", ct.JPEG),
    )
    assert statuses(ctx, 3) == [200, 200, 200]
    assert [json.loads(r) for r in responses] == [
        {"n": 1, "type": "text/plain", "calls": [1]},
        {"n": 2, "type": ct.JSON, "calls": [1, 2]},
        {"n": 3, "type": ct.JPEG, "calls": [1, 2, 3]},
    ]
    assert last_forwards(service) == []


def test_batch_predict_fn_gets_the_whole_batch_and_each_keeps_its_attributes(
    tmp_path: Path, restore_imports: None
) -> None:
    model_dir = add_code(creative_model_dir(tmp_path, "b", size=16), BATCH_HOOK)
    service = service_for(model_dir, tmp_path)
    assert service.chain is not None and service.chain.batching == "user"
    assert "batch_predict_fn" in service.chain.customised
    responses, ctx = call(
        service,
        jpeg(JPEGS[0], **{CUSTOM_ATTRIBUTES: "tag=a"}),
        json_images(JPEGS[1], JPEGS[2], **{CUSTOM_ATTRIBUTES: "tag=b"}),
        jpeg(CORRUPT, **{CUSTOM_ATTRIBUTES: "tag=c"}),
    )
    assert statuses(ctx, 3) == [200, 200, 400]
    assert [json.loads(r) for r in responses[:2]] == [
        {"images": 1, "tag": "a", "calls": [2]},
        {"images": 2, "tag": "b", "calls": [2]},
    ]
    assert ctx.get_response_headers(0)[CUSTOM_ATTRIBUTES] == "echo=a"
    assert ctx.get_response_headers(1)[CUSTOM_ATTRIBUTES] == "echo=b"
    assert CUSTOM_ATTRIBUTES not in ctx.get_response_headers(2)
    # a failing batch is narrowed down to the request that fails alone
    _, ctx = call(
        service,
        jpeg(JPEGS[0], **{CUSTOM_ATTRIBUTES: "tag=a"}),
        jpeg(JPEGS[1], **{CUSTOM_ATTRIBUTES: "tag=bad"}),
    )
    assert statuses(ctx, 2) == [200, 500]
    assert [f.requests for f in last_forwards(service)] == [(0, 1), (0,), (1,)]


def test_batch_predict_fn_is_checked_up_front() -> None:
    module = type(sys)("user")
    module.batch_predict_fn = lambda data_list, model: data_list  # type: ignore[attr-defined]
    with pytest.raises(UserCodeError, match="must take 3 arguments"):
        user_batch_hook(module)
    module.batch_predict_fn = lambda data_list, model, contexts: data_list  # type: ignore[attr-defined]
    assert user_batch_hook(module) is module.batch_predict_fn  # type: ignore[attr-defined]
    module.transform_fn = lambda model, body, content_type, accept: body  # type: ignore[attr-defined]
    with pytest.raises(UserCodeError, match="together with transform_fn"):
        user_batch_hook(module)

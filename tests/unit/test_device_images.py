"""scorer.inference.device_images: JPEGs decoded, resized and normalised on the model's device.

On this CPU-only host the device is the CPU (torchvision's libjpeg-turbo decoder stands in
for nvJPEG); the path is the one a CUDA worker takes, and its inputs and scores are
compared with the CPU path's (PIL with draft).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scorer.errors import BadRequestError, PayloadTooLargeError
from scorer.inference import device_images
from scorer.inference.batching import Batcher, BatchRequest
from scorer.inference.chain import Chain, Response
from scorer.inference.codecs import ImageBatch
from scorer.inference.context import RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.inference.device_images import (
    choose_decoding,
    decode_jpegs,
    preprocess_on_device,
    to_device,
)
from scorer.inference.images import (
    MAX_IMAGE_PIXELS,
    EncodedJpeg,
    decode_image,
    decode_target,
    preprocess_images,
    read_image,
)
from scorer.models.spec import RESIZE_POLICIES, InputSpec
from tests.support.models import add_code, creative_model_dir, image_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def encoded(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def kept(data: bytes, target: int | None = None) -> EncodedJpeg:
    image = read_image(data, target)
    assert isinstance(image, EncodedJpeg)
    return image


# --- reading: checked, kept encoded --------------------------------------------------------


def test_an_rgb_or_grey_jpeg_is_kept_with_the_size_pil_would_decode_it_to() -> None:
    data = image_bytes("JPEG", (640, 480), seed=1)
    jpeg = kept(data, target=100)
    assert jpeg.data == data
    assert jpeg.full_size == (640, 480)
    assert jpeg.size == decode_image(data, target=100).size == (160, 120)  # the pixel budget
    grey = encoded(Image.open(io.BytesIO(data)).convert("L"))
    assert kept(grey).size == (640, 480)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_other_formats_are_decoded_as_before(fmt: str) -> None:
    image = read_image(image_bytes(fmt, (64, 48)), 32)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 48)


def test_a_cmyk_jpeg_is_decoded_by_pil() -> None:
    cmyk = encoded(Image.open(io.BytesIO(image_bytes("JPEG", (64, 48)))).convert("CMYK"))
    image = read_image(cmyk)
    assert isinstance(image, Image.Image) and image.mode == "RGB"


def test_reading_refuses_what_decoding_refuses() -> None:
    with pytest.raises(BadRequestError, match="empty request body"):
        read_image(b"")
    with pytest.raises(BadRequestError, match="not a decodable image"):
        read_image(b"\xff\xd8\xff" + bytes(100))
    data = bytearray(image_bytes("JPEG", (32, 24)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2  # declares 30000 x 30000
    assert MAX_IMAGE_PIXELS < 30000 * 30000
    with pytest.raises(PayloadTooLargeError):
        read_image(bytes(data), target=224)


# --- decoding on the device ----------------------------------------------------------------


def test_jpegs_decode_in_one_call_to_rgb_uint8_matching_pil() -> None:
    datas = [image_bytes("JPEG", (96, 80), seed=s) for s in range(3)]
    decoded = decode_jpegs([kept(d) for d in datas], CPU)
    assert [tuple(t.shape) for t in decoded] == [(3, 80, 96)] * 3
    assert all(t.dtype == torch.uint8 for t in decoded)
    for tensor, data in zip(decoded, datas, strict=True):
        pil = torch.from_numpy(np.asarray(decode_image(data))).permute(2, 0, 1)
        assert float((tensor.float() - pil.float()).abs().mean()) < 2.0  # same JPEG, two IDCTs


def test_a_truncated_jpeg_is_a_400_and_the_others_still_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = image_bytes("JPEG", (96, 80), seed=1)
    truncated = good[: len(good) // 2]
    calls: list[int] = []
    real = device_images._decode_jpeg

    def counting(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(data))
        return real(data, device)

    monkeypatch.setattr(device_images, "_decode_jpeg", counting)
    assert len(decode_jpegs([kept(good), kept(good)], CPU)) == 2
    assert calls == [2]  # one call for the batch
    calls.clear()
    passed = EncodedJpeg(truncated, (96, 80), (96, 80))  # as if its header had been read
    with pytest.raises(BadRequestError, match="corrupt or truncated"):
        decode_jpegs([kept(good), passed], CPU)
    assert calls == [2, 1, 1]  # the batch, then each alone; PIL refuses the truncated one


def test_a_jpeg_without_its_end_marker_is_decoded_by_pil_when_read() -> None:
    good = image_bytes("JPEG", (96, 80), seed=1)
    assert isinstance(read_image(good + b"\x00\x00"), EncodedJpeg)  # padding is fine
    with pytest.raises(BadRequestError, match="corrupt or truncated"):
        read_image(good[: len(good) // 2])  # the CPU path's 400, before any device decodes it


def test_a_jpeg_the_device_decoder_refuses_is_decoded_by_pil(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = image_bytes("JPEG", (96, 80), seed=2)

    def refuse(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        raise RuntimeError("nvJPEG: unsupported JPEG")

    monkeypatch.setattr(device_images, "_decode_jpeg", refuse)
    (decoded,) = decode_jpegs([kept(data)], CPU)
    want = torch.from_numpy(np.asarray(decode_image(data))).permute(2, 0, 1)
    assert torch.equal(decoded, want)


# --- resizing and normalising on the device ------------------------------------------------


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
def test_device_preprocessing_is_close_to_the_cpu_path(policy: str) -> None:
    spec = InputSpec(size=96, resize=108, policy=policy)
    datas = [image_bytes("JPEG", size, seed=i) for i, size in enumerate([(640, 480), (300, 500)])]
    target = decode_target(spec)
    device = preprocess_on_device([kept(d, target) for d in datas], spec, CPU)
    cpu = preprocess_images([decode_image(d, target) for d in datas], spec)
    assert device.shape == cpu.shape == (2, 3, 96, 96)
    assert device.is_contiguous(memory_format=torch.channels_last)
    diff = (device - cpu).abs()
    assert float(diff.mean()) < 0.05
    assert float(diff.max()) < 1.0
    assert float(device.std()) > 0.1  # real pictures, not a constant


def test_mixed_batches_keep_their_order_and_pil_images_take_the_cpu_path() -> None:
    spec = InputSpec(size=64, resize=72)
    png = decode_image(image_bytes("PNG", (120, 90), seed=5))
    jpegs = [kept(image_bytes("JPEG", (120, 90), seed=s), 72) for s in (6, 7)]
    batch = preprocess_on_device([jpegs[0], png, jpegs[1]], spec, CPU)
    assert torch.equal(batch[1], preprocess_images([png], spec)[0])
    alone = preprocess_on_device([jpegs[1]], spec, CPU)
    assert torch.allclose(batch[2], alone[0])
    assert not torch.allclose(batch[0], batch[2])


def test_to_device_leaves_a_cpu_batch_as_it_is() -> None:
    batch = torch.randn(2, 3, 8, 8)
    assert to_device(batch, CPU) is batch


# --- the choice, once per worker -----------------------------------------------------------


def test_the_cpu_keeps_pil_and_cuda_uses_the_device_only_when_it_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert choose_decoding(CPU) == "pil"
    assert choose_decoding(torch.device("cuda", 0)) == "pil"  # no CUDA here: the probe fails
    decoded: list[torch.device] = []

    def works(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        decoded.append(device)
        return [torch.zeros(3, 16, 16, dtype=torch.uint8)]

    monkeypatch.setattr(device_images, "_decode_jpeg", works)
    assert choose_decoding(torch.device("cuda", 0)) == "device"
    assert decoded == [torch.device("cuda", 0)]


def test_the_defaults_report_their_choice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="scorer.inference"):
        defaults = CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m")
    assert defaults.decoding == "pil"
    events = [json.loads(r.getMessage()) for r in caplog.records if "image_decoding" in r.message]
    assert [{k: v for k, v in e.items() if k != "time"} for e in events] == [
        {"decoding": "pil", "device": "cpu", "event": "image_decoding", "model": "m"}
    ]
    assert all("time" in e for e in events)


def test_the_choice_is_a_text_line_with_the_text_log_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="scorer.inference"):
        CreativeScoringDefaults(CPU, allow_pickle=False, model_name="m", log_format="text")
    (line,) = [r.getMessage() for r in caplog.records if "image_decoding" in r.message]
    assert line.startswith("image_decoding decoding=pil device=cpu model=m time=")


# --- the serving chain ---------------------------------------------------------------------


def chain_for(model_dir: Path, decoding: str) -> Chain:
    defaults = CreativeScoringDefaults(
        CPU,
        allow_pickle=False,
        model_name="m",
        decoding=decoding,  # type: ignore[arg-type]
    )
    chain = Chain.for_model_dir(model_dir, defaults)
    chain.load(model_dir)
    return chain


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return creative_model_dir(tmp_path_factory.mktemp("device"), "m", size=64)


def context(content_type: str = "image/jpeg") -> RequestContext:
    return RequestContext(model_name="m", content_type=content_type, accept="application/json")


def scores_of(response: Response) -> np.ndarray:
    body = json.loads(response.body)
    return np.array([list(row.values()) for row in body["scores"]])


def test_scores_of_both_paths_agree_within_a_tolerance(model_dir: Path) -> None:
    device, pil = chain_for(model_dir, "device"), chain_for(model_dir, "pil")
    data = image_bytes("JPEG", (640, 480), seed=3)
    assert isinstance(device.decode(data, context()).images[0], EncodedJpeg)
    assert isinstance(pil.decode(data, context()).images[0], Image.Image)
    on_device = scores_of(device.transform(data, context()))
    on_cpu = scores_of(pil.transform(data, context()))
    assert on_device.shape == on_cpu.shape == (1, 2)
    assert np.abs(on_device - on_cpu).max() < 0.05
    batch = json.dumps({"images": [base64.b64encode(data).decode()] * 2}).encode()
    both = scores_of(device.transform(batch, context("application/json")))
    assert np.allclose(both, np.repeat(on_device, 2, axis=0), atol=1e-5)


def test_a_users_predict_fn_still_gets_pil_images(
    tmp_path: Path, model_dir: Path, restore_imports: None
) -> None:
    own = tmp_path / "own"
    own.mkdir()
    for item in model_dir.iterdir():
        (own / item.name).write_bytes(item.read_bytes())
    add_code(
        own, "def predict_fn(data, model):\n    return [type(i).__name__ for i in data.images]\n"
    )
    chain = chain_for(own, "device")
    data = chain.decode(image_bytes("JPEG", (64, 64)), context())
    assert isinstance(data, ImageBatch) and isinstance(data.images[0], Image.Image)


def test_a_batch_with_a_truncated_jpeg_answers_400_for_it_alone(model_dir: Path) -> None:
    chain = chain_for(model_dir, "device")
    good = image_bytes("JPEG", (320, 240), seed=8)
    requests = [BatchRequest(body, context()) for body in (good, good[: len(good) // 2], good)]
    outcomes = Batcher(chain).run(requests)
    assert isinstance(outcomes[0], Response) and isinstance(outcomes[2], Response)
    assert isinstance(outcomes[1], BadRequestError)
    assert np.allclose(scores_of(outcomes[0]), scores_of(outcomes[2]))

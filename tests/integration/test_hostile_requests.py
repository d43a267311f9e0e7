"""Hostile requests against the real server: each gets a 4xx JSON error with a useful message,
the worker stays alive, and the next good request succeeds."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.models import creative_model_dir, image_bytes, torchscript_model_dir
from tests.support.servers import load, running_server

pytestmark = pytest.mark.integration

JPEG = image_bytes("JPEG", (320, 240))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def webp_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="WEBP")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("models")
    creative = creative_model_dir(root, "creative")
    tensor = torchscript_model_dir(root, "tensor")
    extra = {"SAGEMAKER_MULTI_MODEL": "true", "SCORER_MODELS_ROOT": str(root)}
    with running_server(tmp_path_factory.mktemp("run"), extra) as running:
        with httpx.Client(base_url=running.url, timeout=120) as client:
            assert load(client, "creative", creative).status_code == 200
            assert load(client, "tensor", tensor).status_code == 200
        yield running.url


def post(
    url: str, model: str, body: bytes, content_type: str | None, **headers: str
) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(f"{url}/models/{model}/invoke", content=body, headers=headers, timeout=60)


def assert_alive(url: str) -> None:
    assert post(url, "creative", JPEG, "image/jpeg").status_code == 200


CASES = [
    ("truncated JPEG", "creative", JPEG[: len(JPEG) // 2], "image/jpeg", 400, "truncated"),
    ("truncated PNG", "creative", image_bytes("PNG")[:100], "image/png", 400, "image"),
    ("truncated WebP", "creative", webp_bytes()[:30], "image/webp", 400, "image"),
    ("zero bytes", "creative", b"", "image/jpeg", 400, "empty"),
    ("PNG bomb", "creative", png_declaring(30000, 30000), "image/png", 413, "pixels"),
    ("absurd aspect ratio", "creative", image_bytes("PNG", (2000, 10)), "image/png", 400, "aspect"),
    ("JPEG sent as CSV", "tensor", JPEG, "text/csv", 400, "CSV"),
    ("unknown Content-Type", "creative", JPEG, "application/pdf", 415, "Content-Type"),
    ("malformed JSON", "creative", b'{"images": [', "application/json", 400, "JSON"),
    ("JSON NaN", "tensor", b"[[NaN, 1, 2, 3]]", "application/json", 400, "NaN"),
    ("JSON wrong shape", "tensor", b"[[1, 2, 3]]", "application/json", 400, "shape"),
    ("JSON ragged", "tensor", b"[[1, 2, 3, 4], [1]]", "application/json", 400, "rectangular"),
    ("base64 garbage", "creative", b'{"images": ["%%%"]}', "application/json", 400, "base64"),
]


@pytest.mark.parametrize(
    "model,body,content_type,status,fragment",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_body_is_4xx_and_the_worker_survives(
    server: str, model: str, body: bytes, content_type: str, status: int, fragment: str
) -> None:
    response = post(server, model, body, content_type)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == status and fragment.lower() in payload["message"].lower()
    assert "Traceback" not in response.text
    assert_alive(server)


def test_missing_content_type_is_read_as_image_bytes(server: str) -> None:
    assert post(server, "creative", JPEG, None).status_code == 200


def test_unsupported_accept_is_406(server: str) -> None:
    response = post(server, "creative", JPEG, "image/jpeg", Accept="application/pdf")
    assert response.status_code == 406
    assert_alive(server)


def test_payload_over_the_limit_is_413(server: str) -> None:
    response = post(server, "creative", b"\xff" * (6 * 1024 * 1024 + 10), "image/jpeg")
    assert response.status_code == 413
    assert_alive(server)


def test_header_with_cr_lf_is_refused_and_the_server_survives(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    raw = (
        b"POST /models/creative/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"X-Amzn-SageMaker-Custom-Attributes: a=1\rinjected: yes\r\n"
        b"Content-Length: 4\r\n\r\nabcd"
    )
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        try:
            while b"\r\n" not in reply:  # the status line, however the reply is split
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pytest.fail(f"the connection was reset instead of answered (got {reply!r})")
    # a dropped connection (no reply) fails here: only an HTTP 400 answer passes
    assert reply.startswith(b"HTTP/1.1 "), f"no HTTP reply, the connection was dropped: {reply!r}"
    status = int(reply.split(b" ", 2)[1])
    assert status == 400, reply[:200]
    assert_alive(server)


def _load_unsafe_name(server: str) -> tuple[httpx.Response, list[str]]:
    with httpx.Client(base_url=server, timeout=120) as client:
        response = client.post("/models", json={"model_name": "..%2F..%2Fx", "url": "/"})
        names = [m["modelName"] for m in client.get("/models").json()["models"]]
    return response, names


def test_unsafe_model_name_is_refused(server: str) -> None:
    response, names = _load_unsafe_name(server)
    assert response.status_code != 200 and "Traceback" not in response.text
    assert names == ["creative", "tensor"]
    assert_alive(server)


def test_unsafe_model_name_is_a_4xx_with_the_reason(server: str) -> None:
    response, _ = _load_unsafe_name(server)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and "model name" in body["message"], body
    assert "Traceback" not in response.text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.just(JPEG[:500]).map(lambda b: b + b"\0" * 10),
        st.text(max_size=200).map(str.encode),
    ),
    content_type=st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "image/webp",
            "application/json",
            "text/csv",
            "application/x-npy",
            "application/octet-stream",
            "text/plain",
            "",
        ]
    ),
    model=st.sampled_from(["creative", "tensor"]),
)
def test_fuzzed_requests_never_get_a_5xx(
    server: str, body: bytes, content_type: str, model: str
) -> None:
    response = post(server, model, body, content_type or None)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "message" in response.json()

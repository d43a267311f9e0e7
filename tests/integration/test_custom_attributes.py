"""Response custom attributes up to SageMaker's 1,024 characters, against the real MMS.

MMS 1.1.11's decoder of worker replies (``ModelResponseDecoder`` / ``CodecUtils.readMap``)
throws on a header map that arrives split across socket reads, which a long header on a
worker that has just answered short replies (Netty's read buffer shrank) provokes: the
reply is lost, MMS answers 500 "Worker died." and restarts the worker. scorer works around
it (docs/contract.md, "MMS header-frame defect and scorer's workaround"). Over HTTP this
suite sends short and near-limit attributes alternately and wants every one back intact
from the same worker; at the decoder (Java, no sockets) it feeds one reply in every chunk
size to MMS's decoder (the defect, pinned) and to scorer's (no failure).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mms.context import Context, RequestProcessor
from mms.protocol.otf_message_handler import create_predict_response

from scorer.inference.context import CUSTOM_ATTRIBUTES
from tests.support.java import compile_harness, plugins_jar, run_harness
from tests.support.models import add_code
from tests.support.servers import running_server

pytestmark = pytest.mark.integration

# The response attribute is exactly the length the request asks for ("len=N"): the
# worker's pid, then a run of varied visible ASCII, so a cut or shifted value shows.
ECHO_LENGTH = """
import json
import os
import string

ALPHABET = string.ascii_letters + string.digits + "-_.:/+"

def model_fn(model_dir):
    return "attributes"

def input_fn(body, content_type, context):
    return int(context.attribute("len") or 0)

def predict_fn(length, model):
    return length

def output_fn(length, accept, context):
    head = "pid=%d;pad=" % os.getpid()
    pad = "".join(ALPHABET[i % len(ALPHABET)] for i in range(max(0, length - len(head))))
    context.response_custom_attributes = (head + pad)[:length] if length else None
    return json.dumps({"pid": os.getpid(), "len": length}), "application/json"
"""

# Short replies first (they shrink Netty's read buffer), then near-limit ones alternating.
LENGTHS = [0, 8, 12] + [n for i in range(20) for n in (16 + i, 1014 + i % 11)]


def expected(pid: int, length: int) -> str:
    alphabet = string.ascii_letters + string.digits + "-_.:/+"
    head = f"pid={pid};pad="
    pad = "".join(alphabet[i % len(alphabet)] for i in range(max(0, length - len(head))))
    return (head + pad)[:length]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    model_dir = tmp_path_factory.mktemp("attributes") / "model"
    model_dir.mkdir()
    add_code(model_dir, ECHO_LENGTH)
    extra = {"SAGEMAKER_MULTI_MODEL": "false", "SCORER_MODEL_DIR": str(model_dir)}
    with (
        running_server(tmp_path_factory.mktemp("run"), extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


def invoke(client: httpx.Client, length: int) -> httpx.Response:
    return client.post(
        "/invocations",
        content=b"{}",
        headers={
            "Content-Type": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": f"len={length}",
        },
    )


def test_short_and_near_limit_attributes_alternate_on_one_worker(client: httpx.Client) -> None:
    pids = set()
    for i, length in enumerate(LENGTHS):
        response = invoke(client, length)
        assert response.status_code == 200, (i, length, response.text)
        body = response.json()
        assert body["len"] == length
        pids.add(body["pid"])
        attribute = response.headers.get("x-amzn-sagemaker-custom-attributes")
        if length == 0:
            assert attribute is None
        else:
            assert attribute == expected(body["pid"], length), (i, length)
    assert len(pids) == 1, f"the worker restarted: pids {sorted(pids)}"


def test_the_limit_itself_comes_back_whole(client: httpx.Client) -> None:
    for _ in range(5):
        assert invoke(client, 3).status_code == 200
        response = invoke(client, 1024)
        assert response.status_code == 200, response.text
        attribute = response.headers["x-amzn-sagemaker-custom-attributes"]
        assert len(attribute) == 1024
        assert attribute == expected(response.json()["pid"], 1024)


# Feeds one reply frame to MMS's decoder class in chunks of every size from 1 byte to the
# whole frame (Netty's EmbeddedChannel, no sockets), as socket reads would deliver it.
# With "patched", scorer's plugin class is initialised first, as MMS does at start-up.
SPLIT_REPLIES_JAVA = """
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandler;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Set;
import java.util.TreeSet;

public class SplitReplies {
    public static void main(String[] args) throws Exception {
        byte[] frame = Files.readAllBytes(Paths.get(args[0]));
        String header = args[1];
        if (args.length > 2) {
            Class<?> fix = Class.forName("ai.scorer.mms.WorkerReplyDecoder");
            Field status = fix.getDeclaredField("STATUS");
            status.setAccessible(true);
            System.out.println("status=" + status.get(null));
        }
        // by name, after the plugin: a direct reference would load MMS's class first
        Class<?> decoder = Class.forName("com.amazonaws.ml.mms.util.codec.ModelResponseDecoder");
        int failures = 0;
        Set<String> kinds = new TreeSet<>();
        for (int step = 1; step <= frame.length; ++step) {
            ChannelHandler handler =
                    (ChannelHandler) decoder.getConstructor(int.class).newInstance(6 << 20);
            EmbeddedChannel channel = new EmbeddedChannel(handler);
            String problem = null;
            try {
                for (int off = 0; off < frame.length && problem == null; off += step) {
                    int n = Math.min(step, frame.length - off);
                    channel.writeInbound(Unpooled.wrappedBuffer(frame, off, n));
                    if (off + n < frame.length && channel.readInbound() != null) {
                        problem = "decoded before the frame was complete";
                    }
                }
                ModelWorkerResponse resp = problem == null ? channel.readInbound() : null;
                if (problem == null && resp == null) {
                    problem = "no reply decoded";
                } else if (problem == null) {
                    String value = resp.getPredictions().get(0).getHeaders().get(header);
                    if (value == null || value.length() != 1024) {
                        problem = "header lost";
                    }
                }
            } catch (RuntimeException e) {
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                problem = cause instanceof CorruptedFrameException
                        ? cause.getMessage() : cause.getClass().getSimpleName();
            }
            if (problem != null) {
                failures += 1;
                kinds.add(problem);
            }
        }
        System.out.println("failures=" + failures + "/" + frame.length);
        System.out.println("kinds=" + String.join("|", kinds));
    }
}
"""


def reply_frame(attribute: str) -> bytes:
    """A worker's reply as MMS's own worker code encodes it (``create_predict_response``)."""
    context = Context("model", "/tmp", None, 1, None, "1.1.11")
    context.request_processor = [RequestProcessor({})]
    context.set_response_content_type(0, "application/json")
    context.set_response_header(0, CUSTOM_ATTRIBUTES, attribute)
    body = b'{"pid": 1}'
    return bytes(create_predict_response([body], {0: "0" * 36}, "Prediction success", 200, context))


@pytest.fixture(scope="module")
def split_replies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = compile_harness(tmp_path_factory.mktemp("java"), "SplitReplies", SPLIT_REPLIES_JAVA)
    frame = folder / "frame.bin"
    frame.write_bytes(reply_frame(expected(1, 1024)))
    return folder


def run_split_replies(folder: Path, *, patched: bool) -> dict[str, str]:
    args = [str(folder / "frame.bin"), CUSTOM_ATTRIBUTES] + (["patched"] if patched else [])
    out = run_harness(folder, "SplitReplies", args, patched=patched)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_mms_decoder_rejects_a_reply_split_inside_its_headers(split_replies: Path) -> None:
    """The defect itself, pinned: MMS 1.1.11's decoder, a reply with a 1,024-character header.

    Split inside the header map: ``CodecUtils.readMap`` throws; split inside the status code:
    an unchecked ``readInt`` throws. Only chunks that hold the whole head of the frame pass.
    """
    result = run_split_replies(split_replies, patched=False)
    failures, total = (int(n) for n in result["failures"].split("/"))
    assert failures > total * 0.9, result
    kinds = set(result["kinds"].split("|"))
    assert "Message size exceed limit: 1024" in kinds, result
    assert "IndexOutOfBoundsException" in kinds, result


def test_scorer_decoder_waits_for_every_split(split_replies: Path) -> None:
    assert plugins_jar().is_file(), f"{plugins_jar()} missing: run scripts/build-plugins"
    result = run_split_replies(split_replies, patched=True)
    assert result["status"] == "installed", result
    assert result["failures"].startswith("0/") and result["kinds"] == "", result

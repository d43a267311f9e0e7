"""scorer.inference.context: custom attributes parsing and the RequestContext hooks receive."""

from __future__ import annotations

import pytest

from scorer.inference import context as rc
from scorer.inference.context import RequestContext, parse_custom_attributes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("", {}),
        ("a=1;b=2", {"a": "1", "b": "2"}),
        ("a=1,b=2", {"a": "1", "b": "2"}),
        (" a = 1 ; b= two words ", {"a": "1", "b": "two words"}),
        ("flag;a=1", {"flag": "", "a": "1"}),
        ("flag", {"flag": ""}),
        ("a=1;a=2", {"a": "2"}),
        ("a=x=y", {"a": "x=y"}),
        ("a=1,2;b=3", {"a": "1,2", "b": "3"}),  # ';' wins as the separator when present
        (";;a=1;;", {"a": "1"}),
        ("=orphan;b=1", {"b": "1"}),
        ("trace_id=Root-1-abc;tag=blue", {"trace_id": "Root-1-abc", "tag": "blue"}),
    ],
)
def test_parse_custom_attributes(raw: str | None, expected: dict[str, str]) -> None:
    assert parse_custom_attributes(raw) == expected


def test_header_names_are_the_lower_case_sagemaker_names() -> None:
    assert rc.CUSTOM_ATTRIBUTES == "x-amzn-sagemaker-custom-attributes"
    assert rc.TARGET_MODEL == "x-amzn-sagemaker-target-model"
    assert rc.INFERENCE_ID == "x-amzn-sagemaker-inference-id"
    assert rc.MAX_CUSTOM_ATTRIBUTES == 1024


def test_request_context_reads_sagemaker_headers() -> None:
    ctx = RequestContext(
        model_name="m",
        content_type="image/jpeg",
        accept="text/csv",
        headers={
            rc.CUSTOM_ATTRIBUTES: "tag=blue; threshold=0.5",
            rc.TARGET_MODEL: "m.tar.gz",
            rc.INFERENCE_ID: "inf-42",
        },
        request_id="req-1",
    )
    assert ctx.custom_attributes == "tag=blue; threshold=0.5"
    assert ctx.target_model == "m.tar.gz"
    assert ctx.inference_id == "inf-42"
    assert ctx.attribute("tag") == "blue"
    assert ctx.attribute("threshold") == "0.5"
    assert ctx.attribute("missing") is None
    assert ctx.request_id == "req-1"
    assert (ctx.content_type, ctx.accept) == ("image/jpeg", "text/csv")


def test_request_context_defaults() -> None:
    ctx = RequestContext(model_name="m")
    assert ctx.content_type == "" and ctx.accept == "" and ctx.request_id == ""
    assert dict(ctx.headers) == {}
    assert ctx.custom_attributes is None
    assert ctx.target_model is None
    assert ctx.inference_id is None
    assert ctx.attribute("tag") is None
    assert ctx.response_custom_attributes is None


def test_contexts_do_not_share_headers() -> None:
    first, second = RequestContext(model_name="a"), RequestContext(model_name="b")
    assert first.headers is not second.headers


def test_hooks_can_set_response_custom_attributes() -> None:
    ctx = RequestContext(model_name="m")
    ctx.response_custom_attributes = "echo=1"
    assert ctx.response_custom_attributes == "echo=1"

"""scorer.local.data_processing: SageMaker's DataProcessing (InputFilter, JoinSource,
OutputFilter) on JSON and CSV records, with the API reference's own examples."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scorer.local.data_processing import DataProcessing, DataProcessingError, JsonPath


@pytest.mark.parametrize(
    ("expression", "value", "selected"),
    [
        ("$", {"a": 1}, {"a": 1}),
        ("$[1:]", ["id", 1.5, 2], [1.5, 2]),
        ("$.features", {"id": 1, "features": [1, 2]}, [1, 2]),
        ("$[0,5:]", [0, 1, 2, 3, 4, 5, 6], [0, 5, 6]),
        ("$['id','SageMakerOutput']", {"id": 1, "x": 2, "SageMakerOutput": 3},
         {"id": 1, "SageMakerOutput": 3}),
        ("$[2]", ["a", "b", "c"], "c"),
        ("$[-1]", ["a", "b", "c"], "c"),
        ("$.a.b", {"a": {"b": 5}}, 5),
        ("$[*].x", [{"x": 1}, {"x": 2}], [1, 2]),
    ],
)  # fmt: skip
def test_jsonpath_selections(expression: str, value: Any, selected: Any) -> None:
    assert JsonPath(expression).select(value) == selected


@pytest.mark.parametrize(
    ("expression", "value", "needle"),
    [
        ("$[5]", [1, 2], "index 5 is outside"),
        ("$[0,5]", [1, 2], "index 5 is outside"),
        ("$.missing", {"a": 1}, "selects nothing"),
        ("$[1:]", {"a": 1}, "needs an array"),
    ],
)
def test_a_selection_outside_the_record_is_an_error(
    expression: str, value: Any, needle: str
) -> None:
    with pytest.raises(DataProcessingError, match=needle):
        JsonPath(expression).select(value)


def test_defaults_need_no_processing() -> None:
    assert DataProcessing.build("image/jpeg", None, None, "$", "None") is None
    assert DataProcessing.build("image/jpeg", None, "$", None, "None") is None


def test_json_join_adds_sagemaker_output_or_wraps_what_is_not_an_object() -> None:
    processing = DataProcessing.build("application/json", None, "$.features", None, "Input")
    assert processing is not None
    record = b'{"id": 7, "features": [1, 2]}'
    assert processing.model_input(record) == b"[1,2]"
    joined = json.loads(processing.output(record, b'{"score": 0.5}\n'))
    assert joined == {"id": 7, "features": [1, 2], "SageMakerOutput": {"score": 0.5}}
    wrapped = json.loads(processing.output(b"[1, 2]", b"0.25"))
    assert wrapped == {"SageMakerInput": [1, 2], "SageMakerOutput": 0.25}


def test_csv_join_appends_the_answers_columns_then_the_output_filter_picks() -> None:
    processing = DataProcessing.build("text/csv", "text/csv", "$[1:]", "$[0,3:]", "Input")
    assert processing is not None
    assert processing.model_input(b'id-1,"a, b",3') == b'"a, b",3'
    assert processing.output(b"id-1,1.5,3", b"0.9,0.1") == b"id-1,0.9,0.1"


def test_output_filter_without_a_join_applies_to_the_answer() -> None:
    processing = DataProcessing.build("image/jpeg", "application/json", None, "$.scores", "None")
    assert processing is not None
    answer = b'{"model": "m", "scores": [{"appeal": 0.5}]}'
    assert json.loads(processing.output(b"\xff\xd8 jpeg", answer)) == [{"appeal": 0.5}]


def test_records_that_are_not_json_or_one_csv_row_are_errors() -> None:
    processing = DataProcessing.build("application/jsonlines", None, "$.a", None, "None")
    assert processing is not None
    with pytest.raises(DataProcessingError, match="not JSON"):
        processing.model_input(b"{broken")
    csv_processing = DataProcessing.build("text/csv", None, "$[0]", None, "None")
    assert csv_processing is not None
    with pytest.raises(DataProcessingError, match="one row"):
        csv_processing.model_input(b"a\nb")

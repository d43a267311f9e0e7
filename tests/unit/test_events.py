"""scorer.events: event lines in JSON and in text."""

from __future__ import annotations

import datetime
import json

from scorer.events import event_line


def test_json_lines_carry_the_event_the_time_and_the_fields() -> None:
    line = event_line("request", {"model": "m", "status": 200, "stages_ms": {"forward": 3.5}})
    parsed = json.loads(line)
    assert parsed["event"] == "request" and parsed["model"] == "m" and parsed["status"] == 200
    assert parsed["stages_ms"] == {"forward": 3.5}
    stamp = datetime.datetime.fromisoformat(parsed["time"])
    assert stamp.tzinfo is not None and stamp.utcoffset() == datetime.timedelta(0)
    assert list(parsed) == sorted(parsed)


def test_text_lines_are_key_value_pairs_after_the_event() -> None:
    line = event_line(
        "request",
        {"model": "m", "status": 404, "content_type": "", "error": 'a "b" c',
         "stages_ms": {"forward": 3.5, "decode": 1.0}},
        "text",
    )  # fmt: skip
    event, _, rest = line.partition(" ")
    assert event == "request"
    assert "model=m" in rest and "status=404" in rest
    assert 'content_type=""' in rest  # empty values stay visible
    assert 'error="a \\"b\\" c"' in rest  # spaces and quotes are quoted
    assert "stages_ms=decode:1.0,forward:3.5" in rest
    assert rest.startswith("content_type=")  # keys sorted

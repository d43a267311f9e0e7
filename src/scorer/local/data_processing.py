"""Batch transform's ``DataProcessing``: ``InputFilter``, ``JoinSource``, ``OutputFilter``.

As the CreateTransformJob API documents it (``PLATFORM.md`` section 7 part 2; the API
reference's ``DataProcessing``):

* ``InputFilter`` (JSONPath, at most 63 characters, default ``$``) selects the part of each
  input record sent to the model, e.g. ``$[1:]`` (a CSV row without its first column) or
  ``$.features``;
* ``JoinSource Input`` joins each original input record with the model's answer for it: a
  JSON object gets the key ``SageMakerOutput``; any other JSON value becomes
  ``{"SageMakerInput": ..., "SageMakerOutput": ...}``; a CSV row gets the answer's columns
  appended;
* ``OutputFilter`` (JSONPath, default ``$``) selects what of the joined record (or of the
  answer, without a join) is written, e.g. ``$[0,5:]`` or ``$['id','SageMakerOutput']``; an
  index outside the record is an error.

Records are JSON (``application/json``, ``application/jsonlines``) or CSV (``text/csv``:
a row is a JSON array of its fields); other content types cannot be filtered or joined.
JSONPath is evaluated by ``jsonpath-ng``. A path that names one value (``$.features``,
``$[2]``) selects that value; a slice, a union, a wildcard or a filter selects a list, or,
when the matches are keys of one object (``$['id','SageMakerOutput']``), an object of them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonpath_ng import DatumInContext, Fields, JSONPath
from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext.parser import parse

JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines")
CSV_TYPES = ("text/csv",)
MAX_JSONPATH = 63
JOIN_SOURCES = ("None", "Input")
_PLURAL = (":", ",", "*", "..", "?")
_INDEX_UNION = re.compile(r"^\$\[\s*(-?\d*(:-?\d*)?\s*(,\s*-?\d*(:-?\d*)?\s*)*)\]$")


class DataProcessingError(ValueError):
    """A record cannot be filtered or joined (not JSON/CSV, an index out of range)."""


def record_format(content_type: str | None) -> str | None:
    """``json``, ``csv``, or None (a content type data processing does not handle)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in CSV_TYPES:
        return "csv"
    return None


class JsonPath:
    """One compiled ``InputFilter``/``OutputFilter`` expression."""

    def __init__(self, expression: str) -> None:
        if len(expression) > MAX_JSONPATH:
            raise ValueError(f"a JSONPath may have at most {MAX_JSONPATH} characters")
        if not expression.startswith("$"):
            raise ValueError(f"a JSONPath starts with $, got {expression!r}")
        union = _INDEX_UNION.match(expression)
        # jsonpath-ng has no union of slices ($[0,5:], the API reference's own example)
        self._indices = _index_union(union.group(1)) if union else None
        try:
            self._path: JSONPath | None = None if union else parse(expression)
        except (JsonPathParserError, Exception) as exc:  # the lexer raises plain Exception
            raise ValueError(f"not a JSONPath: {expression!r} ({exc})") from None
        self.expression = expression
        self.identity = expression == "$"
        self.plural = any(token in expression for token in _PLURAL)

    def select(self, value: Any) -> Any:
        """What the expression selects of ``value``.

        Raises:
            DataProcessingError: it selects nothing (an index or key not there).
        """
        if self.identity:
            return value
        if self._indices is not None:
            return self._select_indices(value)
        assert self._path is not None
        matches: list[DatumInContext] = self._path.find(value)
        if not matches:
            raise DataProcessingError(f"{self.expression} selects nothing in {_preview(value)}")
        if not self.plural and len(matches) == 1:
            return matches[0].value
        keys = [match.path.fields[0] for match in matches if isinstance(match.path, Fields)]
        parents = {id(match.context.value) for match in matches if match.context is not None}
        if len(keys) == len(matches) == len(set(keys)) and len(parents) == 1:  # keys of one object
            return {str(key): match.value for key, match in zip(keys, matches, strict=True)}
        return [match.value for match in matches]

    def _select_indices(self, value: Any) -> Any:
        assert self._indices is not None
        if not isinstance(value, list):
            raise DataProcessingError(f"{self.expression} needs an array, got {_preview(value)}")
        selected: list[Any] = []
        for index in self._indices:
            if isinstance(index, slice):
                selected.extend(value[index])
            elif -len(value) <= index < len(value):
                selected.append(value[index])
            else:
                raise DataProcessingError(
                    f"{self.expression}: index {index} is outside {_preview(value)}"
                )
        if not self.plural:
            return selected[0]
        return selected


def _index_union(items: str) -> list[int | slice]:
    """``0,5:`` as ``[0, slice(5, None)]``."""
    parts: list[int | slice] = []
    for item in items.split(","):
        item = item.strip()
        if ":" in item:
            start, _, stop = item.partition(":")
            parts.append(slice(int(start) if start else None, int(stop) if stop else None))
        elif item:
            parts.append(int(item))
        else:
            raise ValueError(f"an empty index in $[{items}]")
    return parts


def _preview(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_record(record: bytes, fmt: str) -> Any:
    """A record as JSON data: a JSON value, or a CSV row's fields (a list of strings).

    Raises:
        DataProcessingError: it is not JSON, or not one CSV row.
    """
    try:
        text = record.decode("utf-8")
        if fmt == "json":
            return json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataProcessingError(f"a record is not {fmt.upper()}: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) != 1:
        raise DataProcessingError(f"a CSV record must be one row, got {len(rows)}")
    return rows[0]


def render(value: Any, fmt: str) -> bytes:
    """JSON data as a record: compact JSON, or a CSV row (a list's items as its fields)."""
    if fmt == "json":
        return json.dumps(value, separators=(",", ":")).encode()
    fields = value if isinstance(value, list) else [value]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(
        json.dumps(field, separators=(",", ":")) if isinstance(field, dict | list) else field
        for field in fields
    )
    return out.getvalue().encode()


def parse_answer(answer: bytes, fmt: str) -> Any:
    """The model's answer for one record as JSON data: JSON if it is, else (CSV) its
    fields, else its text."""
    text = answer.decode("utf-8", errors="replace").strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        if len(rows) == 1:
            return rows[0]
    return text


@dataclass(frozen=True)
class DataProcessing:
    """A job's ``DataProcessing``, compiled.

    Attributes:
        input_format: ``json`` or ``csv``: the records' format (the job's ContentType).
        output_format: ``json`` or ``csv``: the format records are written in.
        input_filter: InputFilter (None: ``$``).
        output_filter: OutputFilter (None: ``$``).
        join: JoinSource is ``Input``.
    """

    input_format: str
    output_format: str
    input_filter: JsonPath | None
    output_filter: JsonPath | None
    join: bool

    @classmethod
    def build(
        cls,
        content_type: str | None,
        accept: str | None,
        input_filter: str | None,
        output_filter: str | None,
        join_source: str,
    ) -> DataProcessing | None:
        """The job's data processing (None: all defaults, nothing to do).

        Raises:
            ValueError: a bad JSONPath, or a content type it cannot apply to.
        """
        if join_source not in JOIN_SOURCES:
            raise ValueError(f"--join-source must be None or Input, got {join_source!r}")
        compiled = [JsonPath(path) if path else None for path in (input_filter, output_filter)]
        inputs, outputs = (None if path is None or path.identity else path for path in compiled)
        join = join_source == "Input"
        if inputs is None and outputs is None and not join:
            return None
        input_format = record_format(content_type)
        if input_format is None and (inputs is not None or join):
            raise ValueError(
                "--input-filter and --join-source Input need records in JSON or CSV "
                f"(--content-type application/json, application/jsonlines or text/csv), "
                f"got {content_type or 'none'}"
            )
        output_format = input_format if join else record_format(accept or content_type)
        if output_format is None:
            raise ValueError(
                "--output-filter needs answers in JSON or CSV (--accept application/json, "
                f"application/jsonlines or text/csv), got {accept or content_type or 'none'}"
            )
        return cls(input_format or output_format, output_format, inputs, outputs, join)

    def model_input(self, record: bytes) -> bytes:
        """What of ``record`` is sent to the model (``InputFilter``)."""
        if self.input_filter is None:
            return record
        value = self.input_filter.select(parse_record(record, self.input_format))
        return render(value, self.input_format)

    def output(self, record: bytes, answer: bytes) -> bytes:
        """What is written for ``record`` whose answer is ``answer`` (``JoinSource``,
        ``OutputFilter``)."""
        result = parse_answer(answer, self.output_format)
        if self.join:
            original = parse_record(record, self.input_format)
            if self.input_format == "csv":
                result = original + (result if isinstance(result, list) else [result])
            elif isinstance(original, dict):
                result = {**original, "SageMakerOutput": result}
            else:
                result = {"SageMakerInput": original, "SageMakerOutput": result}
        if self.output_filter is not None:
            result = self.output_filter.select(result)
        return render(result, self.output_format)

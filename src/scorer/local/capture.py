"""Data capture in the local emulator: SageMaker's capture records, written as JSONL.

``scorer local --data-capture DIR|s3://bucket/prefix`` records a sample of successful
invocations (``--data-capture-percent``, DataCaptureConfig's ``InitialSamplingPercentage``)
in the format Model Monitor reads (``PLATFORM.md`` section 7 part 5, from the developer
guide's ``model-monitor-data-capture-endpoint`` page), one JSON object a line::

    {"captureData": {"endpointInput": {"observedContentType": "image/jpeg", "mode": "INPUT",
                                       "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "{...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<the caller's>",
                       "inferenceTime": "2026-11-30T22:40:01Z"},
     "eventVersion": "0"}

``encoding`` is ``CSV`` or ``JSON`` (the data as text) for a content type listed in
``--capture-csv-content-type`` / ``--capture-json-content-type`` (CaptureContentTypeHeader),
else ``BASE64``. ``inferenceId`` appears only when the caller sent one (its position in the
record is assumed; AWS does not document it). Files are laid out as SageMaker's:
``{destination}/{endpoint}/{variant}/yyyy/mm/dd/hh/{mm-ss-mmm}-{uuid}.jsonl`` (UTC hour of
the invocation). In a directory, one file per hour per run, appended to a record at a time;
on S3, one object per flush (every :data:`S3_FLUSH_SECONDS`) and per hour.

Records are built and written by one background thread fed by a bounded queue, so the
request path only takes a copy of the bodies' references; a full queue drops the record
with a warning (SageMaker pauses capture when its disk fills). :meth:`DataCapture.close`
writes what is left (the app calls it on shutdown). Only successful invocations are
captured; what SageMaker does with failed ones is not documented.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("scorer.local.capture")

S3_FLUSH_SECONDS = 5.0
MAX_QUEUED = 1000  # invocations waiting to be written; beyond it, records are dropped


@dataclass(frozen=True)
class Captured:
    """One invocation to record."""

    time: datetime.datetime
    input: bytes
    input_type: str | None
    output: bytes
    output_type: str | None
    inference_id: str | None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class RecordFormat:
    """Capture records for one endpoint: the encoding rules of CaptureContentTypeHeader."""

    def __init__(self, csv_types: Iterable[str] = (), json_types: Iterable[str] = ()) -> None:
        self.csv = {_media_type(t) for t in csv_types}
        self.json = {_media_type(t) for t in json_types}

    def _data(self, data: bytes, content_type: str | None, mode: str) -> dict[str, str]:
        media = _media_type(content_type)
        encoding = "CSV" if media in self.csv else "JSON" if media in self.json else "BASE64"
        text: str | None = None
        if encoding != "BASE64":
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                encoding = "BASE64"  # not text after all: keep the bytes intact
        if text is None:
            text = base64.b64encode(data).decode("ascii")
        field = {"observedContentType": content_type} if content_type else {}
        return {**field, "mode": mode, "data": text, "encoding": encoding}

    def record(self, captured: Captured) -> dict[str, Any]:
        """The JSON object SageMaker writes for ``captured``."""
        metadata = {"eventId": str(uuid.uuid4())}
        if captured.inference_id:
            metadata["inferenceId"] = captured.inference_id
        metadata["inferenceTime"] = captured.time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "captureData": {
                "endpointInput": self._data(captured.input, captured.input_type, "INPUT"),
                "endpointOutput": self._data(captured.output, captured.output_type, "OUTPUT"),
            },
            "eventMetadata": metadata,
            "eventVersion": "0",
        }


def file_name(at: datetime.datetime) -> str:
    """A capture file's name as SageMaker's: minute, second, millisecond, a uuid."""
    return f"{at:%M-%S}-{at.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"


def hour_folder(at: datetime.datetime) -> str:
    """``yyyy/mm/dd/hh`` of ``at`` (UTC)."""
    return at.astimezone(datetime.UTC).strftime("%Y/%m/%d/%H")


class Sink(Protocol):
    """Where capture lines go: ``write`` gets the lines of one hour folder."""

    flush_seconds: float

    def write(self, folder: str, first: datetime.datetime, lines: list[str]) -> None: ...


class DirectorySink:
    """Appends to one file per hour folder under ``root`` (created on first use)."""

    flush_seconds = 0.0

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Path] = {}

    def write(self, folder: str, first: datetime.datetime, lines: list[str]) -> None:
        path = self._files.get(folder)
        if path is None:
            path = self.root / folder / file_name(first)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._files[folder] = path
        with path.open("a", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)


def _s3_client() -> Any:
    import boto3

    return boto3.session.Session().client("s3")


class S3Sink:
    """Puts one object per flush and hour folder under ``s3://bucket/prefix``."""

    flush_seconds = S3_FLUSH_SECONDS

    def __init__(self, uri: str, client_factory: Callable[[], Any] = _s3_client) -> None:
        self.bucket, _, self.prefix = uri.removeprefix("s3://").partition("/")
        self._factory = client_factory
        self._client: Any = None

    def write(self, folder: str, first: datetime.datetime, lines: list[str]) -> None:
        if self._client is None:
            self._client = self._factory()
        key = f"{self.prefix.rstrip('/')}/{folder}/{file_name(first)}".lstrip("/")
        body = "".join(line + "\n" for line in lines).encode()
        self._client.put_object(Bucket=self.bucket, Key=key, Body=body)


_STOP = object()


class DataCapture:
    """Samples invocations and writes their capture records on a background thread."""

    def __init__(
        self,
        sink: Sink,
        endpoint_name: str,
        variant_name: str,
        *,
        percent: int = 100,
        record_format: RecordFormat | None = None,
    ) -> None:
        self.sink = sink
        self.base = f"{endpoint_name}/{variant_name}"
        self.percent = percent
        self.format = record_format or RecordFormat()
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(MAX_QUEUED)
        self._random = random.Random()
        self._thread = threading.Thread(target=self._run, name="scorer-capture", daemon=True)
        self._thread.start()

    def offer(
        self,
        body: bytes,
        content_type: str | None,
        output: bytes,
        output_type: str | None,
        inference_id: str | None = None,
    ) -> bool:
        """Record this invocation if it is sampled; returns whether it was queued."""
        if self._random.random() * 100 >= self.percent:
            return False
        captured = Captured(
            datetime.datetime.now(datetime.UTC),
            body, content_type, output, output_type, inference_id,
        )  # fmt: skip
        try:
            self._queue.put_nowait(captured)
        except queue.Full:
            self.dropped += 1
            logger.warning("data capture is behind: dropped a record (%d so far)", self.dropped)
            return False
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        pending: dict[str, tuple[datetime.datetime, list[str]]] = {}
        flush_at = 0.0  # when what is pending is written (a flush interval after the first)
        while True:
            timeout = max(0.0, flush_at - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, Captured):
                if not pending:
                    flush_at = time.monotonic() + self.sink.flush_seconds
                line = json.dumps(self.format.record(item), separators=(",", ":"))
                folder = f"{self.base}/{hour_folder(item.time)}"
                pending.setdefault(folder, (item.time, []))[1].append(line)
            if item is _STOP or (pending and time.monotonic() >= flush_at):
                self._flush(pending)
            if item is _STOP:
                return

    def _flush(self, pending: dict[str, tuple[datetime.datetime, list[str]]]) -> None:
        for folder, (first, lines) in pending.items():
            try:
                self.sink.write(folder, first, lines)
            except Exception:
                logger.exception("data capture: %d records for %s were lost", len(lines), folder)
        pending.clear()


def open_capture(
    destination: str,
    endpoint_name: str,
    variant_name: str,
    *,
    percent: int = 100,
    csv_types: Iterable[str] = (),
    json_types: Iterable[str] = (),
) -> DataCapture:
    """A :class:`DataCapture` writing to a directory or an ``s3://`` prefix."""
    sink: Sink = (
        S3Sink(destination) if destination.startswith("s3://") else DirectorySink(Path(destination))
    )
    return DataCapture(
        sink,
        endpoint_name,
        variant_name,
        percent=percent,
        record_format=RecordFormat(csv_types, json_types),
    )

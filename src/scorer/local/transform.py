"""``scorer transform``: a SageMaker batch transform job on this machine.

It starts the model server the container runs (Multi Model Server with scorer's handler,
one model from ``--model-dir`` or an archive), configured as a transform job configures
the container (``SAGEMAKER_BATCH=true`` and the job's ``SAGEMAKER_MAX_PAYLOAD_IN_MB``,
``SAGEMAKER_BATCH_STRATEGY``, ``SAGEMAKER_MAX_CONCURRENT_TRANSFORMS``); settings the job
leaves open are taken from ``GET /execution-parameters``, then SageMaker's defaults
(``PLATFORM.md`` section 7 part 2). Then, as the platform does:

* every input object (a file under a folder, or an object under an ``s3://`` prefix),
  first decompressed if it is gzip (``CompressionType Gzip``), is sent to ``POST
  /invocations`` whole (``SplitType None``), or split into records at newlines (``Line``)
  or at MXNet RecordIO record boundaries (``RecordIO``, :mod:`scorer.local.recordio`) and
  sent one record per request (``SingleRecord``: a RecordIO record's data alone) or as
  many records as fit in ``MaxPayloadInMB`` (``MultiRecord``: newline-terminated lines, or
  framed RecordIO records);
* with ``DataProcessing`` (``InputFilter``, ``JoinSource``, ``OutputFilter``; JSON or CSV
  records, :mod:`scorer.local.data_processing`), each record is filtered before it is
  sent, and each record's answer joined with the input record and filtered before it is
  written (a ``MultiRecord`` answer must then hold one line per record);
* the answers are written, in input order, to ``<output>/<input name>.out`` (the input's
  subfolders kept), one after the other (``AssembleWith None``) or each followed by a
  newline (``Line``);
* a request that fails (the model's 4xx/5xx, a record over the payload limit) fails its
  file: no ``.out`` is written for it (never a partial one); the other files go on, and
  the job ends with the failures listed and a non-zero exit status.

Files are processed ``MaxConcurrentTransforms`` at a time (the records of one file in
order). Not emulated: ``TFRecord`` splitting, retries (``InvocationsMaxRetries``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from scorer import config as cfg
from scorer.errors import ConfigError, ScorerError
from scorer.local import recordio
from scorer.local.data_processing import DataProcessing, DataProcessingError
from scorer.models.archive import safe_extract
from scorer.modelserver.ports import free_loopback_port
from scorer.modelserver.process import ModelServer
from scorer.modelserver.start import internal_config

logger = logging.getLogger("scorer.transform")

SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
COMPRESSION_TYPES = ("None", "Gzip")
BATCH_STRATEGIES = {"SingleRecord": "SINGLE_RECORD", "MultiRecord": "MULTI_RECORD"}
ASSEMBLE_WITH = ("None", "Line")
DEFAULT_MAX_PAYLOAD_MB = 6
MAX_PAYLOAD_MB = 100  # the API's largest MaxPayloadInMB, and of MaxConcurrent x MaxPayload
MODEL_SERVER_START_TIMEOUT = 180.0
MB = 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_MB = 1024


class TransformError(ScorerError):
    """A request of one input file failed: the file gets no ``.out``."""

    status_code = 400


@dataclass(frozen=True)
class TransformJob:
    """One job's settings (None: not given, as in CreateTransformJob).

    Attributes:
        model: a model directory or ``model.tar.gz``.
        input: a folder, a file, or an ``s3://bucket/prefix``.
        output: a folder or an ``s3://bucket/prefix``.
        content_type: ``TransformInput.ContentType``, sent with every request.
        accept: ``TransformOutput.Accept``.
        split_type: ``None``, ``Line`` or ``RecordIO`` (``TFRecord`` is refused).
        batch_strategy: ``SingleRecord`` or ``MultiRecord`` (None: ask the container).
        max_payload_mb: the largest request, 0 to 100 (None: ask the container; 0: no
            limit).
        max_concurrent: requests at once (None: ask the container).
        assemble_with: ``None`` or ``Line``.
        run_dir: where the model server keeps its files (None: a temporary folder).
        compression_type: ``None`` or ``Gzip`` (every input object is gzip).
        input_filter: ``DataProcessing.InputFilter`` (None: ``$``).
        output_filter: ``DataProcessing.OutputFilter`` (None: ``$``).
        join_source: ``DataProcessing.JoinSource``: ``None`` or ``Input``.
        max_decompressed_mb: the largest a gzip input object may expand to (scorer's
            guard against gzip bombs; SageMaker sets none).
    """

    model: Path
    input: str
    output: str
    content_type: str | None = None
    accept: str | None = None
    split_type: str = "None"
    batch_strategy: str | None = None
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    assemble_with: str = "None"
    run_dir: Path | None = None
    compression_type: str = "None"
    input_filter: str | None = None
    output_filter: str | None = None
    join_source: str = "None"
    max_decompressed_mb: int = DEFAULT_MAX_DECOMPRESSED_MB

    def __post_init__(self) -> None:
        if self.split_type not in SPLIT_TYPES:
            raise ConfigError(
                f"--split-type must be None, Line or RecordIO, got {self.split_type!r}"
            )
        if self.split_type == "TFRecord":
            raise ConfigError("--split-type TFRecord is not emulated by scorer transform")
        if self.compression_type not in COMPRESSION_TYPES:
            raise ConfigError(
                f"--compression-type must be None or Gzip, got {self.compression_type!r}"
            )
        if self.assemble_with not in ASSEMBLE_WITH:
            raise ConfigError(f"--assemble-with must be None or Line, got {self.assemble_with!r}")
        if self.batch_strategy is not None and self.batch_strategy not in BATCH_STRATEGIES:
            raise ConfigError(
                f"--batch-strategy must be SingleRecord or MultiRecord, got {self.batch_strategy!r}"
            )
        if self.batch_strategy == "MultiRecord" and self.split_type == "None":
            raise ConfigError("--batch-strategy MultiRecord needs --split-type Line or RecordIO")
        if self.max_payload_mb is not None and not 0 <= self.max_payload_mb <= MAX_PAYLOAD_MB:
            raise ConfigError(f"--max-payload-mb must be 0 to {MAX_PAYLOAD_MB}")
        if self.max_decompressed_mb < 1:
            raise ConfigError("--max-decompressed-mb must be at least 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError("--max-concurrent must be at least 1")
        if (
            self.max_concurrent is not None
            and self.max_payload_mb
            and self.max_concurrent * self.max_payload_mb > MAX_PAYLOAD_MB
        ):
            raise ConfigError(
                f"--max-concurrent x --max-payload-mb must be at most {MAX_PAYLOAD_MB} "
                "(as in CreateTransformJob)"
            )
        processing = self.data_processing  # ConfigError for what cannot be filtered
        if processing and processing.input_format == "csv" and self.split_type != "Line":
            raise ConfigError(
                "--input-filter, --output-filter and --join-source on text/csv need "
                "--split-type Line (a CSV record is one row)"
            )
        if not self.model.exists():
            raise ConfigError(f"{self.model} is neither a model directory nor a model archive")

    @functools.cached_property
    def data_processing(self) -> DataProcessing | None:
        """The job's ``DataProcessing`` (None: nothing to filter or join).

        Raises:
            ConfigError: a bad JSONPath, or records that are neither JSON nor CSV.
        """
        try:
            return DataProcessing.build(
                self.content_type,
                self.accept,
                self.input_filter,
                self.output_filter,
                self.join_source,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


# --------------------------------------------------------------------------- records


def decompress(data: bytes, limit: int) -> bytes:
    """A gzip object's content (``CompressionType Gzip``; concatenated members too), at
    most ``limit`` bytes: inflation stops one byte past it, so a gzip bomb costs no more.

    Raises:
        TransformError: it is not gzip (or is cut short), or it expands beyond ``limit``.
    """
    parts: list[bytes] = []
    produced = 0
    pending = data
    try:
        while True:
            inflate = zlib.decompressobj(wbits=31)  # one gzip member
            while not inflate.eof:
                part = inflate.decompress(pending, limit - produced + 1)
                produced += len(part)
                if produced > limit:
                    raise TransformError(
                        f"the object expands to more than {limit} bytes when decompressed "
                        "(a gzip bomb? --max-decompressed-mb raises the limit)"
                    )
                parts.append(part)
                pending = inflate.unconsumed_tail
                if not pending and not inflate.eof:
                    raise EOFError("the gzip data ends before its end-of-stream marker")
            pending = inflate.unused_data
            if not pending:
                return b"".join(parts)
    except (EOFError, zlib.error) as exc:
        raise TransformError(f"not a gzip object (CompressionType Gzip): {exc}") from None


def split_records(data: bytes, split_type: str) -> list[bytes]:
    """The records of one object: the whole object, its lines (``Line``; a ``\\r``
    before the newline and blank lines dropped), or its RecordIO records' data.

    Raises:
        TransformError: ``RecordIO`` and the object is not RecordIO.
    """
    if split_type == "None":
        return [data]
    if split_type == "RecordIO":
        try:
            return recordio.decode(data)
        except recordio.RecordIOError as exc:
            raise TransformError(f"not RecordIO: {exc}") from None
    lines = (line.removesuffix(b"\r") for line in data.split(b"\n"))
    return [line for line in lines if line.strip()]


def mini_batches(
    records: Sequence[bytes], split_type: str, strategy: str, limit_bytes: int
) -> Iterator[tuple[int, int, bytes]]:
    """The request bodies for ``records``, in order, as ``(first, last, body)`` (record
    indices, from 0): one record each (``SINGLE_RECORD``, or ``SplitType None``), or as
    many records as fit in ``limit_bytes`` (``MULTI_RECORD``; 0: no limit), each
    newline-terminated (``Line``) or framed (``RecordIO``).

    Raises:
        TransformError: a record (or a whole object) is larger than the limit.
    """

    def too_large(index: int, size: int) -> TransformError:
        what = "the object" if split_type == "None" else f"record {index + 1}"
        return TransformError(
            f"{what} is {size} bytes, more than MaxPayloadInMB ({limit_bytes} bytes)"
        )

    if split_type == "None" or strategy == "SINGLE_RECORD":
        for index, record in enumerate(records):
            if limit_bytes and len(record) > limit_bytes:
                raise too_large(index, len(record))
            yield index, index, record
        return
    batch: list[bytes] = []
    size = first = 0
    for index, record in enumerate(records):
        line = recordio.encode(record) if split_type == "RecordIO" else record + b"\n"
        if limit_bytes and len(line) > limit_bytes:
            raise too_large(index, len(line))
        if batch and limit_bytes and size + len(line) > limit_bytes:
            yield first, index - 1, b"".join(batch)
            batch, size = [], 0
        if not batch:
            first = index
        batch.append(line)
        size += len(line)
    if batch:
        yield first, len(records) - 1, b"".join(batch)


def assemble(answers: Sequence[bytes], assemble_with: str) -> bytes:
    """The ``.out`` object: the answers joined (``None``), or each ending in a newline."""
    if assemble_with == "None":
        return b"".join(answers)
    return b"".join(answer.removesuffix(b"\n") + b"\n" for answer in answers)


# --------------------------------------------------------------------------- storage


class Store(Protocol):
    """Where input objects are read from or outputs written to."""

    def names(self) -> list[str]:
        """Every object's name under the store's root, sorted (``a/b.jpg``)."""
        ...

    def read(self, name: str) -> bytes:
        """One object's bytes."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Write one object (its folders created)."""
        ...

    def describe(self, name: str) -> str:
        """Where ``name`` is, for messages."""
        ...


class FolderStore:
    """A local folder (or a single file: its one name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent if path.is_file() else path

    def names(self) -> list[str]:
        if self.path.is_file():
            return [self.path.name]
        if not self.path.is_dir():
            raise ConfigError(f"input {self.path} is neither a folder nor a file")
        found = (
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file()
        )
        return sorted(name for name in found if not _hidden(name))

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        partial.replace(target)  # never a partial .out under its name

    def describe(self, name: str) -> str:
        return str(self.root / name)


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


class S3Store:
    """An ``s3://bucket/prefix``, through boto3's standard configuration."""

    def __init__(self, uri: str, client: Any = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"not an s3://bucket/prefix: {uri!r}")
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3

            client = boto3.session.Session().client("s3")
        self.client = client
        self._keys: dict[str, str] = {}

    def _key(self, name: str) -> str:
        if not self.prefix:
            return name
        return f"{self.prefix.rstrip('/')}/{name}"

    def names(self) -> list[str]:
        listing = self.client.get_paginator("list_objects_v2")
        base = self.prefix.rstrip("/") + "/" if self.prefix else ""
        for page in listing.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                if key.endswith("/"):
                    continue
                if key.startswith(base):
                    self._keys[key[len(base) :]] = key
                elif key == self.prefix:  # the prefix names one object
                    self._keys[key.rsplit("/", 1)[-1]] = key
        return sorted(name for name in self._keys if not _hidden(name))

    def read(self, name: str) -> bytes:
        key = self._keys.get(name) or self._key(name)
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"


def open_store(location: str) -> Store:
    """A folder/file path or an ``s3://`` prefix."""
    if location.startswith("s3://"):
        return S3Store(location)
    return FolderStore(Path(location))


# --------------------------------------------------------------------------- the job


@dataclass
class TransformReport:
    """What a job did: the ``.out`` objects written and the input files that failed."""

    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # input name -> reason
    records: int = 0
    requests: int = 0

    @property
    def ok(self) -> bool:
        """Whether every input file got its ``.out``."""
        return not self.failed


@dataclass(frozen=True)
class ExecutionSettings:
    """The settings a job runs with, after the container's ``/execution-parameters``."""

    batch_strategy: str  # SINGLE_RECORD | MULTI_RECORD
    max_payload_mb: int
    max_concurrent: int


def _container_environ(job: TransformJob, environ: Mapping[str, str]) -> dict[str, str]:
    """The container's environment as the platform sets it for ``job``."""
    env = dict(environ)
    env[cfg.BATCH] = "true"
    env[cfg.MULTI_MODEL] = "false"
    if job.max_payload_mb is not None:
        env[cfg.MAX_PAYLOAD_IN_MB] = str(job.max_payload_mb)
    if job.batch_strategy is not None:
        env[cfg.BATCH_STRATEGY] = BATCH_STRATEGIES[job.batch_strategy]
    if job.max_concurrent is not None:
        env[cfg.MAX_CONCURRENT_TRANSFORMS] = str(job.max_concurrent)
    return env


def resolve_settings(job: TransformJob, answer: Mapping[str, Any] | None) -> ExecutionSettings:
    """The job's settings where given, else ``/execution-parameters``' ``answer`` (None:
    it did not answer), else SageMaker's defaults (MultiRecord, 6 MB, 1)."""
    answer = answer or {}
    strategy = BATCH_STRATEGIES.get(job.batch_strategy or "", "")
    if not strategy:
        raw = str(answer.get("BatchStrategy") or "MULTI_RECORD")
        strategy = BATCH_STRATEGIES.get(raw, raw.upper())
        if strategy not in BATCH_STRATEGIES.values():
            strategy = "MULTI_RECORD"
    payload = job.max_payload_mb
    if payload is None:
        payload = _int_or(answer.get("MaxPayloadInMB"), DEFAULT_MAX_PAYLOAD_MB)
    concurrent = job.max_concurrent
    if concurrent is None:
        concurrent = max(1, _int_or(answer.get("MaxConcurrentTransforms"), 1))
    return ExecutionSettings(strategy, min(payload, MAX_PAYLOAD_MB), concurrent)


def _int_or(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Invoker:
    """``POST /invocations`` with the job's headers, one thread-safe client."""

    def __init__(self, url: str, job: TransformJob, timeout: float) -> None:
        headers = {}
        if job.content_type:
            headers["Content-Type"] = job.content_type
        if job.accept:
            headers["Accept"] = job.accept
        self._client = httpx.Client(
            base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )

    def __call__(self, body: bytes) -> bytes:
        response = self._client.post("/invocations", content=body)
        if response.status_code >= 400:
            text = response.text.strip().replace("\n", " ")
            raise TransformError(f"HTTP {response.status_code}: {text[:300]}")
        return response.content

    def execution_parameters(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = self._client.get("/execution-parameters")
            if response.status_code == 200:
                answer = response.json()
                if isinstance(answer, dict):
                    return answer
        return None

    def close(self) -> None:
        self._client.close()


def transform_file(
    name: str,
    data: bytes,
    job: TransformJob,
    settings: ExecutionSettings,
    invoke: Callable[[bytes], bytes],
) -> tuple[bytes, int, int]:
    """One input object's ``.out`` bytes, its record count and its request count.

    Raises:
        TransformError: the object cannot be read as the job says, or a request failed
            (the message names its records).
    """
    if job.compression_type == "Gzip":
        data = decompress(data, job.max_decompressed_mb * MB)
    records = split_records(data, job.split_type)
    processing = job.data_processing
    limit = settings.max_payload_mb * MB
    answers: list[bytes] = []
    requests = 0
    try:
        inputs = records if processing is None else _filtered(records, processing)
        for first, last, body in mini_batches(
            inputs, job.split_type, settings.batch_strategy, limit
        ):
            try:
                answer = invoke(body)
                requests += 1
                if processing is None:
                    answers.append(answer)
                    continue
                for index, part in enumerate(_per_record(answer, last - first + 1)):
                    answers.append(processing.output(records[first + index], part))
            except (TransformError, DataProcessingError) as exc:
                raise TransformError(f"{_records(job, first, last)}{_message(exc)}") from None
    except DataProcessingError as exc:
        raise TransformError(_message(exc)) from None
    return assemble(answers, job.assemble_with), len(records), requests


def _filtered(records: Sequence[bytes], processing: DataProcessing) -> list[bytes]:
    """Each record's InputFilter selection (the error names the record)."""
    filtered = []
    for index, record in enumerate(records):
        try:
            filtered.append(processing.model_input(record))
        except DataProcessingError as exc:
            raise DataProcessingError(f"record {index + 1}: InputFilter: {exc}") from None
    return filtered


def _per_record(answer: bytes, count: int) -> list[bytes]:
    """A request's answer, one per record: the answer itself (one record), or its lines.

    Raises:
        DataProcessingError: not one line per record (nothing to join each record with).
    """
    if count == 1:
        return [answer]
    lines = [line for line in answer.split(b"\n") if line.strip()]
    if len(lines) != count:
        raise DataProcessingError(
            f"the model answered {len(lines)} line(s) for {count} records; JoinSource and "
            "OutputFilter need one answer line per record"
        )
    return lines


def _records(job: TransformJob, first: int, last: int) -> str:
    if job.split_type == "None":
        return ""
    return f"record {first + 1}: " if first == last else f"records {first + 1}-{last + 1}: "


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, TransformError) else str(exc)


def process_files(
    names: Sequence[str],
    source: Store,
    target: Store,
    job: TransformJob,
    settings: ExecutionSettings,
    invoke: Callable[[bytes], bytes],
    on_done: Callable[[str, str | None], None] = lambda _name, _error: None,
) -> TransformReport:
    """Transform every input in ``names`` (``settings.max_concurrent`` at a time)."""
    report = TransformReport()
    lock = threading.Lock()

    def one(name: str) -> None:
        error: str | None = None
        records = requests = 0
        try:
            out, records, requests = transform_file(name, source.read(name), job, settings, invoke)
            target.write(f"{name}.out", out)
        except TransformError as exc:
            error = exc.message
        except httpx.HTTPError as exc:
            error = f"the model server did not answer: {exc}"
        except Exception as exc:  # an input or output that cannot be read or written
            logger.debug("%s failed", name, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        with lock:
            if error is None:
                report.written.append(f"{name}.out")
                report.records += records
                report.requests += requests
            else:
                report.failed[name] = error
            on_done(name, error)  # under the lock: a progress bar is not thread-safe

    with ThreadPoolExecutor(max_workers=settings.max_concurrent) as pool:
        list(pool.map(one, names))
    report.written.sort()
    return report


@contextlib.contextmanager
def model_server(
    job: TransformJob, environ: Mapping[str, str]
) -> Iterator[tuple[ModelServer, float]]:
    """The container's model server for ``job``, and its per-request timeout; stopped
    (and a temporary run folder removed) on exit."""
    own = job.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="scorer-transform-")) if own else job.run_dir
    assert run_dir is not None
    run_dir = run_dir.absolute()
    server: ModelServer | None = None
    try:
        model_dir = job.model.absolute()
        if model_dir.is_file():
            extracted = run_dir / "model"
            if extracted.exists():
                shutil.rmtree(extracted)
            safe_extract(model_dir, extracted)
            model_dir = extracted
        env = _container_environ(job, environ)
        config = internal_config(
            cfg.load_config(env),
            port=free_loopback_port(),
            run_dir=run_dir / "mms",
            models_root=model_dir.parent,
            multi_model=False,
            model_dir=model_dir,
        )
        log = run_dir / "model-server.log"  # the terminal keeps the progress bar
        server = ModelServer(config, env, "127.0.0.1")
        server.start(output=log)
        try:
            server.wait_ready(MODEL_SERVER_START_TIMEOUT)
        except BaseException:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            logger.error("the model server did not start; its output ends:\n%s", tail)
            raise
        yield server, float(config.timeout_seconds + 30)
    finally:
        if server is not None:
            server.stop(grace=10)
        if own:
            shutil.rmtree(run_dir, ignore_errors=True)


def run_transform(
    job: TransformJob,
    environ: Mapping[str, str],
    progress: Callable[[int], contextlib.AbstractContextManager[Callable[[str, str | None], None]]]
    | None = None,
) -> TransformReport:
    """Run ``job``: start the model server, transform every input, stop it.

    Args:
        job: the job.
        environ: the environment the model server inherits (and boto3's S3 configuration).
        progress: given the number of input files, a context manager whose value is
            called after each file (its name, and its error or None).

    Raises:
        ConfigError: the job cannot run (no input, a bad location, the model missing).
        ModelServerStartError: the model server did not start.
    """
    source = open_store(job.input)
    target = open_store(job.output)
    names = source.names()
    if not names:
        raise ConfigError(f"no input objects under {job.input}")
    with model_server(job, environ) as (server, timeout):
        invoke = _Invoker(server.url, job, timeout)
        try:
            settings = resolve_settings(job, invoke.execution_parameters())
            logger.info(
                "transform: %d input(s), %s, MaxPayloadInMB %d, MaxConcurrentTransforms %d",
                len(names), settings.batch_strategy, settings.max_payload_mb,
                settings.max_concurrent,
            )  # fmt: skip
            if progress is None:
                return process_files(names, source, target, job, settings, invoke)
            with progress(len(names)) as on_done:
                return process_files(names, source, target, job, settings, invoke, on_done)
        finally:
            invoke.close()


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM ends the job as Ctrl+C does: the model server is stopped on the way out."""

    def _on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rate(done: int, started: float) -> str:
    """Files per second since ``started`` (``time.monotonic()``), for the progress bar."""
    elapsed = max(time.monotonic() - started, 1e-6)
    return f"{done / elapsed:.1f} files/s"

"""The ``scorer`` command line: ``serve``, ``demo`` and the model tools."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import click

from scorer import config as cfg
from scorer.errors import ScorerError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO) if not level.isdigit() else int(level),
        format="%(asctime)s [%(levelname)s] %(name)s - %(message)s",
        stream=sys.stdout,
    )
    # one line per HTTP call to the model server (the supervisor polls it every 2 s) is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group()
def cli() -> None:
    """scorer: a SageMaker multi-model server for creative-scoring PyTorch models."""


@cli.command()
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
def serve(bind: str) -> None:
    """Start Multi Model Server as the SageMaker container does (config from the environment).

    With SCORER_MODEL_PREFIX set, the container runs scorer's self-managed multi-model mode
    (many models behind a single-model endpoint, e.g. on GPU instances).
    """
    if os.environ.get(cfg.MODEL_PREFIX):
        from scorer.serving.self_managed import serve_self_managed

        _logging(os.environ.get(cfg.LOG_LEVEL, "INFO"))
        raise SystemExit(serve_self_managed(os.environ, bind_address=bind))
    from scorer.modelserver.process import ModelServer

    server = ModelServer.from_environ(os.environ, bind_address=bind)
    _logging(server.config.log_level)
    raise SystemExit(server.serve_forever())


@cli.command()
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--bind", default="127.0.0.1", show_default=True)
@click.option(
    "--workdir",
    default=str(REPO_ROOT / "var"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo model and the server's run files live.",
)
def demo(port: int, bind: str, workdir: Path) -> None:
    """Train (once) the built-in demo creative scorer and serve it on a single-model endpoint."""
    from scorer.demo import EXTRA_MODULES, INSTALL_HINT

    try:
        from scorer.demo.training import ensure_demo_model
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in EXTRA_MODULES:
            raise
        raise click.ClickException(
            f"scorer demo needs {exc.name}, from the optional 'demo' extra: {INSTALL_HINT}"
        ) from None
    from scorer.modelserver.process import ModelServer
    from scorer.validate import sample_creative

    _logging("INFO")
    os.environ.setdefault(cfg.EMF, "false")  # a terminal, not CloudWatch: no EMF unless asked
    model_dir = ensure_demo_model(workdir / "models" / "demo")
    run_dir = workdir / "run" / f"demo-{port}"
    config = replace(
        cfg.load_config(os.environ),
        multi_model=False,
        port=port,
        model_dir=model_dir,
        run_dir=run_dir,
        mms_config_path=run_dir / "mms.properties",
    )
    server = ModelServer(config, bind_address=bind)
    sample = workdir / "sample.jpg"
    sample.write_bytes(sample_creative())

    def announce() -> None:
        click.echo(
            "\nscorer is ready. Score a creative with:\n\n"
            f"  curl -s -H 'Content-Type: image/jpeg' --data-binary @{sample} "
            f"{server.url}/invocations\n\nPress Ctrl+C to stop.\n"
        )

    # SIGTERM and SIGINT drain and stop the model server; if this process is killed, the
    # model server's group follows it (see scorer.modelserver.zygote).
    raise SystemExit(server.serve_forever(on_ready=announce))


@cli.command()
@click.argument(
    "model_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--spec", "spec_path", type=click.Path(exists=True, path_type=Path))
@click.option("--weights", "weights_path", type=click.Path(exists=True, path_type=Path))
@click.option("--code", "code_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--extra", "extra", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--compile",
    "compile_form",
    type=click.Choice(["none", "aoti"]),
    default="none",
    show_default=True,
    help="Also compile the model ahead of time (aoti: torch.export + AOTInductor, CPU); it is "
    "served if its outputs match eager's and it measures faster here.",
)
@click.option(
    "--keep-compiled",
    is_flag=True,
    help="Serve the compiled form even if it did not measure faster here.",
)
def package(
    model_dir: Path | None,
    spec_path: Path | None,
    weights_path: Path | None,
    code_dir: Path | None,
    extra: tuple[Path, ...],
    output: Path,
    compile_form: str,
    keep_compiled: bool,
) -> None:
    """Write a reproducible SageMaker model.tar.gz.

    Either pack MODEL_DIR as it is, or assemble --spec, --weights, --code and --extra files.
    """
    from scorer.models.package import package_directory, package_model

    if model_dir is not None:
        if spec_path or weights_path or code_dir or extra:
            raise click.UsageError("give either MODEL_DIR or --spec/--weights/--code/--extra")
        result = package_directory(
            model_dir, output, compile_form=compile_form, keep_compiled=keep_compiled
        )
    else:
        if spec_path is None or weights_path is None:
            raise click.UsageError("--spec and --weights are required without MODEL_DIR")
        result = package_model(
            output,
            spec_path=spec_path,
            weights_path=weights_path,
            code_dir=code_dir,
            extra_files=list(extra),
            compile_form=compile_form,
            keep_compiled=keep_compiled,
        )
    for line in result.compiled.lines() if result.compiled else []:
        click.echo(line)
    if result.precision is not None:
        click.echo(result.precision.line())
    click.echo(f"wrote {result.path} ({result.size} bytes, {len(result.files)} files)")
    click.echo(f"sha256 {result.sha256}")


@cli.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-n", "--count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
def variants(model_dir: Path, count: int, output: Path) -> None:
    """Write COUNT similarly sized per-market head variants of a model as .tar.gz archives."""
    from scorer.models.package import make_variants

    for result in make_variants(model_dir, output, count):
        click.echo(f"{result.path}  sha256 {result.sha256}")


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--allow-pickle", is_flag=True, help="Allow unpickling weights (only for trusted archives)."
)
def validate(source: Path, allow_pickle: bool) -> None:
    """Check a model.tar.gz or model dir: safe unpack, load, one sample inference."""
    from scorer.validate import validate as run_validation

    _logging("WARNING")
    report = run_validation(source, allow_pickle=allow_pickle)
    for line in report.lines():
        click.echo(line)
    click.echo("ok")


@cli.command()
@click.option(
    "--model-prefix",
    help="Multi-model endpoint: a directory or s3://bucket/prefix/ holding the model "
    "archives that TargetModel names [env SCORER_MODEL_PREFIX].",
)
@click.option(
    "--model-dir",
    type=click.Path(exists=True, path_type=Path),
    help="Single-model endpoint: a model directory or model.tar.gz.",
)
@click.option("--port", type=int, help="Port to listen on [default 8080].")
@click.option("--bind", help="Address to listen on [default 127.0.0.1].")
@click.option("--endpoint-name", help="The endpoint name to answer to [default scorer-local].")
@click.option("--max-models", type=int, help="Most models loaded at once (LRU eviction).")
@click.option("--max-memory", help="Host memory budget for loaded models, e.g. 4G (LRU eviction).")
@click.option("--load-wait", type=float, help="Seconds a request waits for a loading model [60].")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where archives are extracted (<dir>/<hash>/model) [a temporary directory].",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the model server started by the emulator keeps its files and logs.",
)
@click.option(
    "--model-server-url",
    help="Use this running model server (e.g. http://model-server:8080) instead of starting one.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Hot reload: when the model's files (code/, weights) or a prefix's archives change, "
    "load the model again without a restart [env SCORER_LOCAL_WATCH].",
)
@click.option(
    "--async-output-path",
    help="Accept InvokeEndpointAsync (single model) and write results under this "
    "s3://bucket/prefix/ (AsyncInferenceConfig S3OutputPath) "
    "[env SCORER_LOCAL_ASYNC_OUTPUT_PATH].",
)
@click.option(
    "--async-failure-path",
    help="Where async errors are written, s3://bucket/prefix/ (S3FailurePath) "
    "[default: the output path; env SCORER_LOCAL_ASYNC_FAILURE_PATH].",
)
@click.option(
    "--async-max-concurrency",
    type=click.IntRange(1, 1000),
    help="Async invocations run at once (MaxConcurrentInvocationsPerInstance) [default 4].",
)
@click.option(
    "--async-success-topic",
    help="SNS topic ARN told of each async success (NotificationConfig SuccessTopic) "
    "[env SCORER_LOCAL_ASYNC_SUCCESS_TOPIC].",
)
@click.option(
    "--async-error-topic",
    help="SNS topic ARN told of each async failure (NotificationConfig ErrorTopic) "
    "[env SCORER_LOCAL_ASYNC_ERROR_TOPIC].",
)
@click.option(
    "--data-capture",
    help="Write SageMaker data capture records (JSONL) under this directory or "
    "s3://bucket/prefix (DataCaptureConfig DestinationS3Uri).",
)
@click.option(
    "--data-capture-percent",
    type=click.IntRange(0, 100),
    help="Share of invocations captured (InitialSamplingPercentage) [default 100].",
)
@click.option(
    "--capture-csv-content-type",
    multiple=True,
    help="Content type captured as CSV text instead of base64 (CsvContentTypes; repeatable).",
)
@click.option(
    "--capture-json-content-type",
    multiple=True,
    help="Content type captured as JSON text instead of base64 (JsonContentTypes; repeatable).",
)
@click.option(
    "--inference-component",
    multiple=True,
    metavar="NAME=ARCHIVE",
    help="With --model-prefix: host an inference component NAME serving ARCHIVE (a key "
    "under the prefix; NAME alone: NAME.tar.gz); InferenceComponentName picks it. Repeatable.",
)
@click.option(
    "--serverless-memory-mb",
    type=int,
    help="Serverless endpoint: MemorySizeInMB, 1024-6144 in steps of 1024 [default 2048]; "
    "applies serverless limits (4 MB bodies, no GPU).",
)
@click.option(
    "--serverless-max-concurrency",
    type=int,
    help="Serverless endpoint: MaxConcurrency, 1-200 [default 5]; more invocations at once "
    "get ThrottlingException.",
)
def local(**options: object) -> None:
    """Run a local SageMaker Runtime (InvokeEndpoint) in front of the model server."""
    from scorer.local.runner import run_local

    _logging("INFO")
    os.environ.setdefault(cfg.EMF, "false")  # a terminal, not CloudWatch: no EMF unless asked
    raise SystemExit(run_local(os.environ, options))


@cli.command()
@click.option(
    "--model-dir",
    "model",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The model: a model directory or model.tar.gz.",
)
@click.option("--input", "input_", required=True, help="A folder, a file, or s3://bucket/prefix.")
@click.option(
    "--output",
    required=True,
    help="A folder or s3://bucket/prefix: one <input name>.out per input object.",
)
@click.option("--content-type", help="Content-Type of every request (TransformInput).")
@click.option("--accept", help="Accept of every request (TransformOutput).")
@click.option(
    "--split-type",
    type=click.Choice(["None", "Line", "RecordIO", "TFRecord"]),
    default="None",
    show_default=True,
    help="None: each object is one request; Line: each line is a record; RecordIO: each "
    "MXNet RecordIO record (TFRecord is not emulated).",
)
@click.option(
    "--compression-type",
    type=click.Choice(["None", "Gzip"]),
    default="None",
    show_default=True,
    help="Gzip: every input object is gzip, decompressed before it is split.",
)
@click.option(
    "--max-decompressed-mb",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="With Gzip: an object that expands beyond this fails its file (a gzip bomb guard).",
)
@click.option(
    "--batch-strategy",
    type=click.Choice(["SingleRecord", "MultiRecord"]),
    help="One record per request, or as many as fit in --max-payload-mb "
    "[default: the container's /execution-parameters, else MultiRecord].",
)
@click.option(
    "--max-payload-mb",
    type=click.IntRange(0, 100),
    help="Largest request in MB; 0: no limit [default: /execution-parameters, else 6].",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 100),
    help="Input files processed at once [default: /execution-parameters, else 1].",
)
@click.option(
    "--assemble-with",
    type=click.Choice(["None", "Line"]),
    default="None",
    show_default=True,
    help="None: answers joined as they are; Line: each answer followed by a newline.",
)
@click.option(
    "--input-filter",
    help="JSONPath selecting what of each JSON/CSV record is sent (DataProcessing "
    "InputFilter), e.g. '$[1:]' or '$.features' [default $].",
)
@click.option(
    "--output-filter",
    help="JSONPath selecting what of each (joined) result is written (OutputFilter), e.g. "
    "\"$['id','SageMakerOutput']\" [default $].",
)
@click.option(
    "--join-source",
    type=click.Choice(["None", "Input"]),
    default="None",
    show_default=True,
    help="Input: join each input record with its answer (JSON: SageMakerOutput key; CSV: "
    "columns appended).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the model server keeps its files and logs [a temporary folder].",
)
def transform(
    model: Path,
    input_: str,
    output: str,
    content_type: str | None,
    accept: str | None,
    split_type: str,
    batch_strategy: str | None,
    max_payload_mb: int | None,
    max_concurrent: int | None,
    assemble_with: str,
    compression_type: str,
    max_decompressed_mb: int,
    input_filter: str | None,
    output_filter: str | None,
    join_source: str,
    run_dir: Path | None,
) -> None:
    """Run a batch transform job here: score every input object with the model server the
    container runs, writing <input name>.out per object (SageMaker's semantics)."""
    from scorer.local.transform import TransformJob, run_transform, stopped_by_signals

    _logging("WARNING")
    os.environ.setdefault(cfg.EMF, "false")
    job = TransformJob(
        model=model,
        input=input_,
        output=output,
        content_type=content_type,
        accept=accept,
        split_type=split_type,
        batch_strategy=batch_strategy,
        max_payload_mb=max_payload_mb,
        max_concurrent=max_concurrent,
        assemble_with=assemble_with,
        run_dir=run_dir,
        compression_type=compression_type,
        max_decompressed_mb=max_decompressed_mb,
        input_filter=input_filter,
        output_filter=output_filter,
        join_source=join_source,
    )
    click.echo(f"scorer transform: starting the model server for {model} ...", err=True)
    with stopped_by_signals():
        report = run_transform(job, os.environ, progress=_transform_progress)
    for name in report.written:
        click.echo(f"wrote {name}")
    for name, reason in sorted(report.failed.items()):
        click.echo(f"FAILED {name}: {reason}", err=True)
    total = len(report.written) + len(report.failed)
    click.echo(
        f"{len(report.written)} of {total} input(s) transformed ({report.records} records, "
        f"{report.requests} requests); {len(report.failed)} failed",
        err=True,
    )
    raise SystemExit(0 if report.ok else 1)


@contextlib.contextmanager
def _transform_progress(total: int) -> Iterator[Callable[[str, str | None], None]]:
    """A progress bar on a terminal (click's; nothing when stderr is not one)."""
    import time

    from scorer.local.transform import rate

    started = time.monotonic()
    counts = {"done": 0, "failed": 0}

    def show(_item: object) -> str:
        return f"{counts['failed']} failed, {rate(counts['done'], started)}"

    with click.progressbar(
        length=total, label="transform", item_show_func=show, file=sys.stderr
    ) as bar:

        def on_done(_name: str, error: str | None) -> None:
            counts["done"] += 1
            counts["failed"] += error is not None
            bar.update(1)

        yield on_done


def main(argv: list[str] | None = None) -> int:
    """Console entry point; domain errors print a message instead of a traceback."""
    try:
        cli.main(args=argv, prog_name="scorer", standalone_mode=False)
    except ScorerError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0

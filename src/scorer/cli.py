"""The ``scorer`` command line: ``serve``, ``demo`` and the model tools."""

from __future__ import annotations

import logging
import os
import sys
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


@click.group()
def cli() -> None:
    """scorer: a SageMaker multi-model server for creative-scoring PyTorch models."""


@cli.command()
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
def serve(bind: str) -> None:
    """Start Multi Model Server as the SageMaker container does (config from the environment)."""
    from scorer.serving.mms import ModelServer

    server = ModelServer(os.environ, bind_address=bind)
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
    from scorer.models.demo import ensure_demo_model
    from scorer.serving.mms import ModelServer

    _logging("INFO")
    model_dir = ensure_demo_model(workdir / "models" / "demo")
    run_dir = workdir / "run" / f"demo-{port}"
    environ = {
        **os.environ,
        cfg.MULTI_MODEL: "false",
        cfg.BIND_TO_PORT: str(port),
        cfg.MODEL_DIR: str(model_dir),
        cfg.RUN_DIR: str(run_dir),
        cfg.MMS_CONFIG_PATH: str(run_dir / "mms.properties"),
    }
    server = ModelServer(environ, bind_address=bind)
    server.start()
    try:
        server.wait_ready()
        sample = model_dir / "sample.jpg"
        click.echo(
            "\nscorer is ready. Score a creative with:\n\n"
            f"  curl -s -H 'Content-Type: image/jpeg' --data-binary @{sample} "
            f"{server.url}/invocations\n\nPress Ctrl+C to stop.\n"
        )
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


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

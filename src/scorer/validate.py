"""``scorer validate``: check an archive or model dir the way the server will load it.

Unpacks safely into a temp dir, loads it with the same chain (user hooks + defaults) the
server uses, sends one sample creative through ``input_fn -> predict_fn -> output_fn``
and reports files, size, load time, memory and latency. When the spec names a compiled
form (``scorer package --compile``), it also reports whether that form is served here and
the forward latency of both forms on this machine. When the spec asks for half precision
(``"dtype"``), it reports the largest difference from float32 scores on the sample
creative and seeded sample inputs. Any problem raises a :class:`ScorerError` whose
message says what is wrong.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from scorer.errors import ModelLoadError, ScorerError
from scorer.models.archive import ArchiveLimits, check_archive, safe_extract
from scorer.models.spec import Latency, ServeSpec

if TYPE_CHECKING:
    from scorer.models.precision import PrecisionCheck


@dataclass
class ValidationReport:
    """The outcome of validating one model."""

    source: str
    files: list[str]
    size_bytes: int
    load_ms: float = 0.0
    rss_growth_bytes: int = 0
    inference_ms: float = 0.0
    content_type: str = ""
    output_heads: list[str] = field(default_factory=list)
    user_hooks: list[str] = field(default_factory=list)
    response_preview: str = ""
    compiled: ServeSpec | None = None  # the compiled form the spec names
    served: str = ""  # what the server loads: the compiled form or the weights' kind
    fallback_reason: str | None = None  # why the compiled form is not served here
    forward_ms: dict[str, Latency] = field(default_factory=dict)  # form -> measured here
    precision: PrecisionCheck | None = None  # half precision against float32, when asked

    def lines(self) -> list[str]:
        """A short human-readable report."""
        precision = [self.precision.line()] if self.precision else []
        return self._lines() + precision + self._compiled_lines()

    def _compiled_lines(self) -> list[str]:
        serve = self.compiled
        if serve is None:
            return []
        status = (
            "served"
            if self.fallback_reason is None
            else f"not served here ({self.fallback_reason}); serving {self.served}"
        )
        lines = [f"compiled:     {serve.form} ({serve.file}): {status}"]
        if self.forward_ms:
            measured = ", ".join(f"{name} {_ms(ms)}" for name, ms in self.forward_ms.items())
            lines.append(f"forward:      {measured} ms per image at batch 1 / 8 (here)")
        if serve.eager_ms and serve.compiled_ms:
            diff = "" if serve.max_abs_diff is None else f"; max abs diff {serve.max_abs_diff:.3g}"
            lines.append(
                f"packaged:     eager {_ms(serve.eager_ms)}, {serve.form} "
                f"{_ms(serve.compiled_ms)} ms per image at batch 1 / 8 (when packaged){diff}"
            )
        return lines

    def _lines(self) -> list[str]:
        return [
            f"model:        {self.source}",
            f"files:        {len(self.files)} ({', '.join(self.files[:8])}"
            + (", ..." if len(self.files) > 8 else "")
            + ")",
            f"size:         {self.size_bytes / 1e6:.2f} MB",
            f"user hooks:   {', '.join(self.user_hooks) or 'none (scorer defaults)'}",
            f"load:         {self.load_ms:.0f} ms, +{self.rss_growth_bytes / 1e6:.0f} MB RSS",
            f"inference:    {self.inference_ms:.1f} ms for one {self.content_type} creative",
            f"output heads: {', '.join(self.output_heads) or '(custom output)'}",
            f"response:     {self.response_preview}",
        ]


def _ms(latency: Latency) -> str:
    return f"{latency.batch1:.2f} / {latency.batch8:.2f}"


def sample_creative() -> bytes:
    """A 640x480 JPEG creative with a gradient, shapes and text, for smoke inference."""
    from PIL import Image, ImageDraw

    img = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle((60, 60, 300, 220), fill=(220, 40, 60))
    draw.ellipse((360, 200, 580, 420), fill=(30, 140, 220))
    draw.text((80, 300), "SALE -50% TODAY", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def validate(
    source: Path, *, allow_pickle: bool = False, limits: ArchiveLimits | None = None
) -> ValidationReport:
    """Validate a ``model.tar.gz`` or an extracted model directory.

    Raises:
        ScorerError: unsafe archive, missing weights, spec mismatch, unsafe pickle, user
            code that fails to import, or a sample inference that fails.
    """
    if source.is_dir():
        return _validate_dir(source, str(source), allow_pickle)
    if not source.is_file():
        raise ModelLoadError(f"{source} does not exist")
    limits = limits or ArchiveLimits()
    check_archive(source, limits)
    with tempfile.TemporaryDirectory(prefix="scorer-validate-") as tmp:
        model_dir = Path(tmp) / "model"
        safe_extract(source, model_dir, limits)
        report = _validate_dir(model_dir, str(source), allow_pickle)
        report.size_bytes = source.stat().st_size
        return report


def _validate_dir(model_dir: Path, label: str, allow_pickle: bool) -> ValidationReport:
    import torch

    from scorer.inference.chain import Chain
    from scorer.inference.context import RequestContext
    from scorer.inference.defaults import CreativeScoringDefaults

    files = sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    size = sum((model_dir / f).stat().st_size for f in files)
    report = ValidationReport(source=label, files=files, size_bytes=size)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    defaults = CreativeScoringDefaults(
        torch.device("cpu"), allow_pickle=allow_pickle, model_name=model_dir.name
    )
    chain = Chain.for_model_dir(model_dir, defaults)
    report.user_hooks = chain.customised
    chain.load(model_dir)
    report.load_ms = (time.perf_counter() - started) * 1000
    report.rss_growth_bytes = max(0, process.memory_info().rss - rss_before)
    body = sample_creative()
    context = RequestContext(
        model_name=model_dir.name, content_type="image/jpeg", accept="application/json"
    )
    report.content_type = "image/jpeg"
    started = time.perf_counter()
    try:
        response = chain.transform(body, context)
    except ScorerError as exc:
        raise ScorerError(f"sample inference failed: {exc.message}", exc.status_code) from None
    except Exception as exc:
        raise ScorerError(f"sample inference failed: {type(exc).__name__}: {exc}") from None
    report.inference_ms = (time.perf_counter() - started) * 1000
    text = response.body.decode(errors="replace")
    report.response_preview = text[:160]
    try:
        scores = json.loads(text).get("scores")
        report.output_heads = list(scores[0]) if scores else []
    except (ValueError, AttributeError, TypeError, IndexError, KeyError):
        report.output_heads = []
    _compare_forms(report, chain.model, model_dir, allow_pickle)
    report.precision = _compare_precision(chain.model, model_dir, body, allow_pickle)
    return report


def _compare_precision(
    model: object, model_dir: Path, creative: bytes, allow_pickle: bool
) -> PrecisionCheck | None:
    """For a spec asking for half precision: the largest difference from float32 on the
    sample creative (preprocessed as the server does) and seeded sample inputs."""
    import torch

    from scorer.inference.images import decode_image, decode_target, preprocess_images
    from scorer.models.loading import LoadedModel
    from scorer.models.precision import compare_precision, sample_inputs

    if not isinstance(model, LoadedModel) or model.spec.dtype == "float32":
        return None
    spec = model.spec.input
    image = decode_image(creative, decode_target(spec))
    inputs = torch.cat([preprocess_images([image], spec), sample_inputs(spec.size)])
    return compare_precision(model_dir, inputs, allow_pickle=allow_pickle)


def _compare_forms(
    report: ValidationReport, model: object, model_dir: Path, allow_pickle: bool
) -> None:
    """For a spec naming a compiled form: what is served, and both forms' forward latency."""
    import torch

    from scorer.models.compiled import time_forwards
    from scorer.models.loading import LoadedModel, load_model

    if not isinstance(model, LoadedModel) or model.spec.serve is None:
        return
    serve = model.spec.serve
    report.compiled, report.served = serve, model.source
    report.fallback_reason = model.fallback_reason
    eager = load_model(model_dir, torch.device("cpu"), allow_pickle=allow_pickle, compiled=False)
    forwards = {"eager": eager}
    if model.source == serve.form:
        forwards[serve.form] = model
    timings = time_forwards(forwards, model.spec.input.size, budget_s=1.0)
    report.forward_ms = {name: timings.median(name) for name in forwards}

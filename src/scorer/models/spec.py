"""The versioned JSON spec that describes a creative-scoring model (``spec.json``).

A model directory (an extracted ``model.tar.gz``) holds ``spec.json`` plus its weights:

.. code-block:: json

    {
      "format": "scorer.model/v1",
      "name": "demo-creative-scorer",
      "version": "1.0.0",
      "architecture": "mobilenet_v3_small",
      "weights": "model.safetensors",
      "input": {"size": 224, "resize": 256, "policy": "resize_center_crop",
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
      "heads": [{"name": "sharpness", "kind": "regression"},
                {"name": "is_clickbait", "kind": "probability"}]
    }

An optional ``"serve"`` object, written by ``scorer package --compile aoti`` (see
:mod:`scorer.models.compiled`), names an ahead-of-time compiled form of the same network to
serve instead, with what was measured when it was chosen; specs without it serve the
weights as before:

.. code-block:: json

    "serve": {"form": "aoti", "file": "model.aoti.pt2", "device": "cpu",
              "machine": "x86_64", "cpu_isa": "AVX2", "torch": "2.14.1",
              "max_batch": 64, "layout": "channels_last",
              "max_abs_diff": 2.4e-07, "tolerance": 0.0001, "compile_s": 31.2,
              "eager_ms": {"batch1": 4.8, "batch8": 3.9},
              "compiled_ms": {"batch1": 3.6, "batch8": 3.1}}

An optional ``"batching"`` object overrides the server's cross-request batching defaults
(``SCORER_MAX_BATCH_SIZE``, ``SCORER_MAX_BATCH_DELAY_MS``) for this model when it is loaded
without batch settings, as SageMaker loads it; either member may be left out:

.. code-block:: json

    "batching": {"max_batch_size": 16, "max_delay_ms": 10}

An optional ``"dtype"`` asks for inference in half precision, ``"float16"`` or
``"bfloat16"`` (default ``"float32"``, left out of the file): the network is cast when it
is loaded and its inputs follow; ``scorer package`` and ``scorer validate`` report the
largest difference from float32 scores on sample inputs (:mod:`scorer.models.precision`).
A spec naming a compiled form (``"serve"``) stays float32.

This module imports no torch: the archive checker and the model cache read specs too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scorer.errors import ModelLoadError

SPEC_FILE = "spec.json"
SPEC_FORMAT = "scorer.model/v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("resize_center_crop", "resize", "letterbox")
HEAD_KINDS = ("regression", "probability")
SERVE_FORMS = ("aoti",)  # torch.export + AOTInductor package (.pt2)
SERVE_DEVICES = ("cpu", "cuda")
SERVE_LAYOUTS = ("channels_last", "contiguous")
MAX_SERVE_BATCH = 4096
MAX_BATCH_SIZE = 1024  # requests in one forward pass (MMS's batch_size)
MAX_BATCH_DELAY_MS = 60_000
DTYPES = ("float32", "float16", "bfloat16")  # inference precision a spec may ask for
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the network's input tensor."""

    size: int = 224
    resize: int = 256
    policy: str = "resize_center_crop"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class HeadSpec:
    """One named score the model outputs."""

    name: str
    kind: str = "regression"


@dataclass(frozen=True)
class Latency:
    """Median forward latency per image, in milliseconds, at batch 1 and batch 8."""

    batch1: float
    batch8: float


@dataclass(frozen=True)
class ServeSpec:
    """A compiled form of the network to serve instead of the weights, and its record.

    ``device``, ``machine``, ``cpu_isa`` and ``torch`` say where it can run (the loader
    checks them and serves the weights when they do not hold); ``max_batch`` is the
    largest batch one call takes (larger batches are split); ``layout`` the memory format
    the program was compiled for. The rest is what ``scorer package`` measured.
    """

    form: str
    file: str
    device: str = "cpu"
    machine: str = ""
    cpu_isa: str = ""
    torch: str = ""
    max_batch: int = 64
    layout: str = "channels_last"
    max_abs_diff: float | None = None
    tolerance: float | None = None
    compile_s: float | None = None
    eager_ms: Latency | None = None
    compiled_ms: Latency | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (unset measurements are left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Any, weights: str) -> ServeSpec:
        """Validate the ``serve`` object of a spec whose weights file is ``weights``.

        Raises:
            ModelLoadError: a field is missing or has an unusable value.
        """
        where = f"{SPEC_FILE}: 'serve'"
        if not isinstance(data, dict):
            raise ModelLoadError(f"{where} must be an object")
        for key in ("form", "file"):
            if key not in data:
                raise ModelLoadError(f"{where} is missing {key!r}")
        form, file = str(data["form"]), str(data["file"])
        if form not in SERVE_FORMS:
            raise ModelLoadError(f"{where}: form {form!r} is not one of {SERVE_FORMS}")
        if not _is_root_file(file) or not file.endswith(".pt2") or file == weights:
            raise ModelLoadError(
                f"{where}: file {file!r} must be a .pt2 file at the model root, not the weights"
            )
        device = str(data.get("device", "cpu"))
        if device not in SERVE_DEVICES:
            raise ModelLoadError(f"{where}: device {device!r} is not one of {SERVE_DEVICES}")
        layout = str(data.get("layout", "channels_last"))
        if layout not in SERVE_LAYOUTS:
            raise ModelLoadError(f"{where}: layout {layout!r} is not one of {SERVE_LAYOUTS}")
        max_batch = data.get("max_batch", 64)
        if not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_SERVE_BATCH:
            raise ModelLoadError(f"{where}: max_batch must be an integer in 1..{MAX_SERVE_BATCH}")
        try:
            return cls(
                form=form,
                file=file,
                device=device,
                machine=str(data.get("machine", "")),
                cpu_isa=str(data.get("cpu_isa", "")),
                torch=str(data.get("torch", "")),
                max_batch=max_batch,
                layout=layout,
                max_abs_diff=_measure(data, "max_abs_diff"),
                tolerance=_measure(data, "tolerance"),
                compile_s=_measure(data, "compile_s"),
                eager_ms=_latency(data, "eager_ms"),
                compiled_ms=_latency(data, "compiled_ms"),
            )
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class BatchingSpec:
    """The model's own cross-request batching limits (None: the server's default).

    Read by scorer's MMS plugin when the model is registered (``docs/contract.md``,
    "Batching a model SageMaker registered"); validated here so ``scorer validate`` and the
    load refuse a bad value.
    """

    max_batch_size: int | None = None
    max_delay_ms: int | None = None

    def to_dict(self) -> dict[str, int]:
        """The JSON-ready form (unset members are left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Any) -> BatchingSpec:
        """Validate the ``batching`` object.

        Raises:
            ModelLoadError: not an object, an unknown member, or a value out of range.
        """
        where = f"{SPEC_FILE}: 'batching'"
        if not isinstance(data, dict):
            raise ModelLoadError(f"{where} must be an object")
        unknown = sorted(set(data) - {"max_batch_size", "max_delay_ms"})
        if unknown:
            raise ModelLoadError(f"{where}: unknown member(s) {unknown}")
        size, delay = data.get("max_batch_size"), data.get("max_delay_ms")
        if size is not None and not (_whole(size) and 1 <= size <= MAX_BATCH_SIZE):
            raise ModelLoadError(
                f"{where}: max_batch_size must be an integer in 1..{MAX_BATCH_SIZE}"
            )
        if delay is not None and not (_whole(delay) and 0 <= delay <= MAX_BATCH_DELAY_MS):
            raise ModelLoadError(
                f"{where}: max_delay_ms must be an integer in 0..{MAX_BATCH_DELAY_MS}"
            )
        return cls(max_batch_size=size, max_delay_ms=delay)


@dataclass(frozen=True)
class ModelSpec:
    """A model's architecture, preprocessing and output heads."""

    name: str
    version: str
    architecture: str
    heads: tuple[HeadSpec, ...]
    weights: str = "model.safetensors"
    input: InputSpec = field(default_factory=InputSpec)
    format: str = SPEC_FORMAT
    serve: ServeSpec | None = None
    batching: BatchingSpec | None = None
    dtype: str = "float32"

    @property
    def head_names(self) -> list[str]:
        """The output names in network output order."""
        return [head.name for head in self.heads]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to ``spec.json``."""
        data = asdict(self)
        data["input"]["mean"] = list(self.input.mean)
        data["input"]["std"] = list(self.input.std)
        data["heads"] = [asdict(head) for head in self.heads]
        if self.serve is None:
            del data["serve"]  # specs without a compiled form keep their exact old text
        else:
            data["serve"] = self.serve.to_dict()
        if self.batching is None:
            del data["batching"]
        else:
            data["batching"] = self.batching.to_dict()
        if self.dtype == "float32":
            del data["dtype"]  # float32 specs keep their exact old text
        return data

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, stable across runs)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Validate and build a spec from parsed JSON.

        Raises:
            ModelLoadError: a field is missing or has an unusable value.
        """
        if not isinstance(data, dict):
            raise ModelLoadError(f"{SPEC_FILE} must be a JSON object")
        fmt = data.get("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ModelLoadError(
                f"{SPEC_FILE}: unsupported format {fmt!r}, expected {SPEC_FORMAT!r}"
            )
        for key in ("name", "architecture", "heads"):
            if key not in data:
                raise ModelLoadError(f"{SPEC_FILE}: missing required field {key!r}")
        name = str(data["name"])
        if not _NAME.match(name):
            raise ModelLoadError(f"{SPEC_FILE}: name {name!r} is not a safe identifier")
        raw_heads = data["heads"]
        if not isinstance(raw_heads, list) or not raw_heads:
            raise ModelLoadError(f"{SPEC_FILE}: 'heads' must be a non-empty list")
        heads = []
        for raw in raw_heads:
            head = (
                HeadSpec(name=str(raw["name"]), kind=str(raw.get("kind", "regression")))
                if (isinstance(raw, dict) and "name" in raw)
                else None
            )
            if head is None:
                raise ModelLoadError(f"{SPEC_FILE}: every head needs a 'name'")
            if head.kind not in HEAD_KINDS:
                raise ModelLoadError(
                    f"{SPEC_FILE}: head {head.name!r} has kind {head.kind!r}, "
                    f"expected one of {HEAD_KINDS}"
                )
            heads.append(head)
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise ModelLoadError(f"{SPEC_FILE}: head names must be unique, got {names}")
        raw_input = data.get("input", {})
        if not isinstance(raw_input, dict):
            raise ModelLoadError(f"{SPEC_FILE}: 'input' must be an object")
        try:
            inp = InputSpec(
                size=int(raw_input.get("size", 224)),
                resize=int(raw_input.get("resize", raw_input.get("size", 224) * 256 // 224)),
                policy=str(raw_input.get("policy", "resize_center_crop")),
                mean=_triple(raw_input.get("mean", IMAGENET_MEAN)),
                std=_triple(raw_input.get("std", IMAGENET_STD)),
            )
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{SPEC_FILE}: invalid 'input': {exc}") from None
        if not 8 <= inp.size <= 4096 or inp.resize < inp.size:
            raise ModelLoadError(f"{SPEC_FILE}: input size {inp.size}/resize {inp.resize} invalid")
        if inp.policy not in RESIZE_POLICIES:
            raise ModelLoadError(
                f"{SPEC_FILE}: input policy {inp.policy!r} not one of {RESIZE_POLICIES}"
            )
        if not all(math.isfinite(s) and s > 0 for s in inp.std):
            raise ModelLoadError(f"{SPEC_FILE}: input std must be positive and finite")
        if not all(math.isfinite(m) for m in inp.mean):
            raise ModelLoadError(f"{SPEC_FILE}: input mean must be finite")
        weights = str(data.get("weights", "model.safetensors"))
        if not _is_root_file(weights):
            raise ModelLoadError(f"{SPEC_FILE}: weights must be a file name at the model root")
        serve = ServeSpec.from_dict(data["serve"], weights) if "serve" in data else None
        batching = BatchingSpec.from_dict(data["batching"]) if "batching" in data else None
        dtype = data.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ModelLoadError(f"{SPEC_FILE}: dtype {dtype!r} is not one of {DTYPES}")
        if serve is not None and dtype != "float32":
            raise ModelLoadError(
                f"{SPEC_FILE}: a compiled form ('serve') runs in float32; dtype {dtype!r} "
                "asks for half precision: drop one of them"
            )
        return cls(
            name=name,
            version=str(data.get("version", "0")),
            architecture=str(data["architecture"]),
            heads=tuple(heads),
            weights=weights,
            input=inp,
            format=fmt,
            serve=serve,
            batching=batching,
            dtype=str(dtype),
        )

    @classmethod
    def read(cls, model_dir: Path) -> ModelSpec:
        """Read ``spec.json`` from a model directory.

        Raises:
            ModelLoadError: the file is missing, not JSON, or invalid.
        """
        path = Path(model_dir) / SPEC_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(f"{SPEC_FILE} not found in the model directory") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{SPEC_FILE} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _whole(value: Any) -> bool:
    """An integer in JSON (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_root_file(name: str) -> bool:
    return "/" not in name and "\\" not in name and not name.startswith(".")


def _measure(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be finite and not negative")
    return float(value)


def _latency(data: dict[str, Any], key: str) -> Latency | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object with batch1 and batch8")
    batch1, batch8 = _measure(value, "batch1"), _measure(value, "batch8")
    if batch1 is None or batch8 is None:
        raise ValueError(f"{key} must be an object with batch1 and batch8")
    return Latency(batch1=batch1, batch8=batch8)


def _triple(value: Any) -> tuple[float, float, float]:
    items = [float(v) for v in value]
    if len(items) != 3:
        raise ValueError("mean/std need exactly 3 values (RGB)")
    return items[0], items[1], items[2]

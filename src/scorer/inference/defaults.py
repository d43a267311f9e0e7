"""scorer's default chain functions for creative scoring.

Each is used unless the model archive's ``code/inference.py`` defines its own:

* ``model_fn(model_dir)``: :func:`scorer.models.loading.load_model` (spec + state_dict,
  TorchScript, torch.export; no unpickling unless allowed);
* ``input_fn(body, content_type)``: images (JPEG/PNG/WebP/raw bytes, base64 in JSON,
  a batch per request) or tensors (JSON arrays, CSV, NPY), see :mod:`codecs`;
* ``predict_fn(data, model)``: the whole request batch in one forward pass under
  ``torch.inference_mode()``;
* ``output_fn(prediction, accept)``: ``{"scores": [{head: value}], "model", "version"}``
  for images; tensors are encoded as-is, as the AWS PyTorch toolkit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer.errors import BadRequestError, ModelLoadError
from scorer.inference import codecs
from scorer.inference import content_types as ct
from scorer.inference.codecs import ImageBatch
from scorer.inference.images import decode_target, preprocess_images
from scorer.models.loading import LoadedModel, load_model
from scorer.models.spec import InputSpec


@dataclass
class Scores:
    """Per-image head scores for one request."""

    values: np.ndarray  # (images, heads) float32
    head_names: list[str]
    model: str
    version: str

    def records(self) -> list[dict[str, float]]:
        """One ``{head: score}`` dict per image."""
        return [
            {name: float(v) for name, v in zip(self.head_names, row, strict=True)}
            for row in self.values
        ]


class CreativeScoringDefaults:
    """The default ``model_fn``/``input_fn``/``predict_fn``/``output_fn`` of one worker."""

    def __init__(self, device: torch.device, *, allow_pickle: bool, model_name: str) -> None:
        self.device = device
        self.allow_pickle = allow_pickle
        self.model_name = model_name
        self.input_spec = InputSpec()

    def model_fn(self, model_dir: str | Path) -> LoadedModel:
        """Load the model directory; remember its input spec for ``input_fn``."""
        model = load_model(
            Path(model_dir), self.device, allow_pickle=self.allow_pickle, name=self.model_name
        )
        self.input_spec = model.spec.input
        return model

    def warm_up(self, model: Any) -> None:
        """Run one forward pass so the first request does not pay for lazy initialisation."""
        if not isinstance(model, LoadedModel):
            return
        size = model.spec.input.size
        dummy = torch.zeros(1, 3, size, size, device=self.device)
        if self.device.type == "cpu":
            dummy = dummy.contiguous(memory_format=torch.channels_last)
        try:
            with torch.inference_mode():
                out = model(dummy)
        except Exception:
            if model.source == "state_dict":
                raise
            return
        if not model.spec.heads and isinstance(out, torch.Tensor) and out.ndim == 2:
            from scorer.models.loading import default_spec

            model.spec = default_spec(model.spec.name, heads=int(out.shape[1]))

    def input_fn(self, body: bytes, content_type: str) -> ImageBatch | torch.Tensor:
        """Decode a request: images stay PIL images, tensor formats become a float tensor."""
        decoded = codecs.decode(body, content_type, decode_target(self.input_spec))
        if isinstance(decoded, ImageBatch):
            return decoded
        return torch.from_numpy(np.ascontiguousarray(decoded))

    def predict_fn(self, data: Any, model: Any) -> Any:
        """One forward pass for the whole request batch."""
        if isinstance(data, ImageBatch):
            spec = model.spec.input if isinstance(model, LoadedModel) else self.input_spec
            batch = preprocess_images(data.images, spec).to(self.device, non_blocking=True)
            with torch.inference_mode():
                out = model(batch)
            return self._scores(out, model)
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if not isinstance(data, torch.Tensor):
            with torch.inference_mode():
                return model(data)
        data = data.to(self.device)
        try:
            with torch.inference_mode():
                return model(data)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            # the tensor's shape and values are the client's: a model that rejects them
            # answers 400 with the reason, not a server fault
            first = (
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            )
            raise BadRequestError(
                f"input tensor of shape {tuple(data.shape)} was rejected by the model: {first}"
            ) from None

    def _scores(self, out: Any, model: Any) -> Scores:
        if not isinstance(out, torch.Tensor):
            raise ModelLoadError(f"model returned {type(out).__name__}, expected a tensor")
        values = out.detach().float().cpu().reshape(out.shape[0], -1).numpy()
        if isinstance(model, LoadedModel):
            names, name, version = model.head_names, model.spec.name, model.spec.version
        else:
            names, name, version = [], self.model_name, "0"
        if not names:
            names = [f"score_{i}" for i in range(values.shape[1])]
        if len(names) != values.shape[1]:
            raise ModelLoadError(
                f"model produced {values.shape[1]} outputs per image but its spec names "
                f"{len(names)} heads"
            )
        return Scores(values=values, head_names=names, model=name, version=version)

    def output_fn(self, prediction: Any, accept: str) -> bytes:
        """Encode a prediction as ``accept`` (JSON, CSV or NPY)."""
        if isinstance(prediction, (bytes, bytearray)):
            return bytes(prediction)
        if isinstance(prediction, str):
            return prediction.encode()
        if isinstance(prediction, Scores):
            if accept == ct.JSON:
                payload = {
                    "scores": prediction.records(),
                    "model": prediction.model,
                    "version": prediction.version,
                }
                return codecs.encode_json(payload)
            if accept == ct.CSV:
                header = ",".join(prediction.head_names) + "\n"
                return header.encode() + codecs.encode_csv(prediction.values)
            return codecs.encode(prediction.values, accept)
        if isinstance(prediction, torch.Tensor):
            prediction = prediction.detach().cpu().numpy()
        return codecs.encode(prediction, accept)

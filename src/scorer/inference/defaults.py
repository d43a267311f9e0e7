"""scorer's default chain functions for creative scoring.

Each is used unless the model archive's ``code/inference.py`` defines its own:

* ``model_fn(model_dir)``: :func:`scorer.models.loading.load_model` (spec + state_dict,
  TorchScript, torch.export; no unpickling unless allowed). The :class:`LoadedModel` it
  returns carries the input spec (``model.spec.input``); nothing else holds a copy;
* ``input_fn(body, content_type)``: images (JPEG/PNG/WebP/raw bytes, base64 in JSON,
  a batch per request) or tensors (JSON arrays, CSV, NPY), see :mod:`codecs`; the chain
  passes the loaded model's input spec so JPEGs are decoded at the size it needs;
* ``predict_fn(data, model)``: the whole request batch in one forward pass under
  ``torch.inference_mode()``, preprocessed per the model's own input spec;
* ``output_fn(prediction, accept)``: :func:`codecs.encode`: ``{"scores": [{head: value}],
  "model", "version"}`` for images; tensors are encoded as-is, as the AWS PyTorch toolkit
  does.

Image decoding and resizing run on the :class:`ImagePool` the worker passes in (its thread
budget); without one they run in the caller's thread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer.errors import BadRequestError, ModelLoadError
from scorer.inference import codecs
from scorer.inference.codecs import ImageBatch, Scores
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.inference.images import decode_target, preprocess_images
from scorer.models.loading import LoadedModel, default_spec, load_model
from scorer.models.spec import InputSpec

__all__ = ["CreativeScoringDefaults", "Scores", "input_spec_of"]


def input_spec_of(model: Any) -> InputSpec:
    """The input spec a model carries: a :class:`LoadedModel`'s own; the ImageNet default
    (224x224) for anything else a user's ``model_fn`` returns."""
    return model.spec.input if isinstance(model, LoadedModel) else InputSpec()


class CreativeScoringDefaults:
    """The default ``model_fn``/``input_fn``/``predict_fn``/``output_fn`` of one worker.

    It holds configuration only (device, pickle policy, model name, image pool); what a
    loaded model needs travels with the model.
    """

    def __init__(
        self,
        device: torch.device,
        *,
        allow_pickle: bool,
        model_name: str,
        pool: ImagePool = SERIAL,
    ) -> None:
        self.device = device
        self.allow_pickle = allow_pickle
        self.model_name = model_name
        self.pool = pool

    def model_fn(self, model_dir: str | Path) -> LoadedModel:
        """Load the model directory; the model carries its spec, input spec included."""
        return load_model(
            Path(model_dir), self.device, allow_pickle=self.allow_pickle, name=self.model_name
        )

    def warm_up(self, model: Any) -> Any:
        """Run one forward pass so the first request does not pay for lazy initialisation.

        Returns the model to serve: ``model`` itself, or, for a bare image model whose
        spec names no heads, a copy whose spec names one generic head per output. ``model``
        is never changed.
        """
        if not isinstance(model, LoadedModel):
            return model
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
            return model
        if not model.spec.heads and isinstance(out, torch.Tensor) and out.ndim == 2:
            heads = default_spec(model.spec.name, heads=int(out.shape[1])).heads
            return dataclasses.replace(model, spec=dataclasses.replace(model.spec, heads=heads))
        return model

    def input_fn(
        self, body: bytes, content_type: str, *, spec: InputSpec | None = None
    ) -> ImageBatch | torch.Tensor:
        """Decode a request: images stay PIL images, tensor formats become a float tensor.

        ``spec`` is the loaded model's input spec (the chain passes it; the ImageNet
        default otherwise): JPEGs are decoded at the smallest scale that still covers it.
        """
        target = decode_target(spec or InputSpec())
        decoded = codecs.decode(body, content_type, target, self.pool)
        if isinstance(decoded, ImageBatch):
            return decoded
        return torch.from_numpy(np.ascontiguousarray(decoded))

    def predict_fn(self, data: Any, model: Any) -> Any:
        """One forward pass for the whole request batch."""
        if isinstance(data, ImageBatch):
            batch = preprocess_images(data.images, input_spec_of(model), self.pool)
            batch = batch.to(self.device, non_blocking=True)
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
        """Encode a prediction as ``accept`` (JSON, CSV or NPY) with :func:`codecs.encode`,
        the one encoder the chain uses for every response."""
        return codecs.encode(prediction, accept)

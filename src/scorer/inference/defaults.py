"""scorer's default chain functions for creative scoring.

Each is used unless the model archive's ``code/inference.py`` defines its own:

* ``model_fn(model_dir)``: :func:`scorer.models.loading.load_model` (spec + state_dict,
  TorchScript, torch.export; no unpickling unless allowed). The :class:`LoadedModel` it
  returns carries the input spec (``model.spec.input``); nothing else holds a copy;
* ``input_fn(body, content_type)``: images (JPEG/PNG/WebP/raw bytes, base64 in JSON,
  a batch per request) or tensors (JSON arrays, CSV, NPY), see :mod:`codecs`; the chain
  passes the loaded model's input spec so JPEGs are decoded at the size it needs. On a
  CUDA worker whose ``predict_fn`` is this one, JPEGs are only checked here and decoded
  on the device with the forward pass's other JPEGs (:mod:`device_images`; the choice is
  made once per worker, logged and kept in :attr:`CreativeScoringDefaults.decoding`);
* ``predict_fn(data, model)``: the whole request batch in one forward pass under
  ``torch.inference_mode()``, preprocessed per the model's own input spec. A tensor is
  checked against the input the model declares before the pass (400 naming the shape);
  a failure inside the pass is the model's (500), unless the model declares no input and a
  dry run on the tensor's shape alone shows it cannot take it (400, :mod:`dry_run`).
  Running out of memory propagates (the handler answers 507), torch's CPU allocator
  failing included (it raises a ``RuntimeError``; it becomes a ``MemoryError``);
* ``output_fn(prediction, accept)``: :func:`codecs.encode`: ``{"scores": [{head: value}],
  "model", "version"}`` for images; tensors are encoded as-is, as the AWS PyTorch toolkit
  does.

Image decoding and resizing run on the :class:`ImagePool` the worker passes in (its thread
budget); without one they run in the caller's thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from scorer.errors import BadRequestError, ModelLoadError
from scorer.events import log_event
from scorer.inference import codecs
from scorer.inference.codecs import ImageBatch, Scores
from scorer.inference.device_images import (
    Decoding,
    choose_decoding,
    preprocess_on_device,
    to_device,
)
from scorer.inference.dry_run import rejected_input
from scorer.inference.image_pool import SERIAL, ImagePool
from scorer.inference.images import (
    EncodedJpeg,
    decode_image,
    decode_target,
    preprocess_images,
    read_image,
)
from scorer.models.loading import LoadedModel, default_spec, load_model
from scorer.models.spec import InputSpec

__all__ = ["CreativeScoringDefaults", "Scores", "declared_input", "input_spec_of"]

logger = logging.getLogger("scorer.inference")

# Out of memory is a RuntimeError too; it is never the client's fault (the handler: 507).
MEMORY_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError)
# How torch's CPU allocator reports a failed allocation (a plain RuntimeError, ENOMEM).
_CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"
# What a forward pass raises when it cannot take the tensor it was given.
_FORWARD_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, IndexError)
_INTEGER_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})


def input_spec_of(model: Any) -> InputSpec:
    """The input spec a model carries: a :class:`LoadedModel`'s own; the ImageNet default
    (224x224) for anything else a user's ``model_fn`` returns."""
    return model.spec.input if isinstance(model, LoadedModel) else InputSpec()


def declared_input(model: Any) -> InputSpec | None:
    """The input a model declares: the image input of a model loaded with a ``spec.json``
    (a ``(batch, 3, size, size)`` float tensor); None for a model that declares none.

    A bare TorchScript or ``torch.export`` program is served with :func:`default_spec`, an
    assumption rather than a declaration (it may take any tensor), and anything a user's
    ``model_fn`` returns declares nothing.
    """
    if not isinstance(model, LoadedModel):
        return None
    spec = model.spec
    if spec == default_spec(spec.name, heads=len(spec.heads)):
        return None
    return spec.input


def _as_memory_error(exc: RuntimeError) -> MemoryError | None:
    """A ``MemoryError`` for torch's CPU allocator failing inside a forward pass (torch
    raises it as a ``RuntimeError``), so it is answered 507 as CUDA's is; else None."""
    if _CPU_ALLOCATION_FAILED in str(exc):
        return MemoryError(str(exc).splitlines()[0][:300])
    return None


def _shape(data: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(n) for n in data.shape)


def _check_declared(data: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``data`` as the float32 image batch ``spec`` declares; 400 naming the shape if not."""
    size = spec.size
    expected = (3, size, size)
    if data.ndim != 4 or _shape(data)[1:] != expected:
        raise BadRequestError(
            f"input tensor of shape {_shape(data)} was rejected by the model: its spec "
            f"declares (batch, 3, {size}, {size}) images"
        )
    if not (data.is_floating_point() or data.dtype in _INTEGER_DTYPES):
        raise BadRequestError(
            f"input tensor of dtype {str(data.dtype).removeprefix('torch.')} was rejected by "
            "the model: it takes real numbers"
        )
    return data.float()


class CreativeScoringDefaults:
    """The default ``model_fn``/``input_fn``/``predict_fn``/``output_fn`` of one worker.

    It holds configuration only (device, pickle policy, model name, image pool, how JPEGs
    are decoded); what a loaded model needs travels with the model. ``decoding`` is chosen
    here, once, by :func:`~scorer.inference.device_images.choose_decoding` unless given
    (tests give ``"device"`` to run the device path on the CPU).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        allow_pickle: bool,
        model_name: str,
        pool: ImagePool = SERIAL,
        decoding: Decoding | None = None,
        log_format: str = "json",
    ) -> None:
        self.device = device
        self.allow_pickle = allow_pickle
        self.model_name = model_name
        self.pool = pool
        self.decoding: Decoding = choose_decoding(device) if decoding is None else decoding
        log_event(
            logger, "image_decoding", log_format, model=model_name, device=str(device),
            decoding=self.decoding,
        )  # fmt: skip

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
        dummy = self._one_image(model)
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

    def one_image_forward(self, model: Any) -> Callable[[], object] | None:
        """A forward pass of one blank image through ``model`` (to time it), or None for a
        model that is not scorer's image model."""
        if not isinstance(model, LoadedModel):
            return None
        dummy = self._one_image(model)

        def forward() -> object:
            with torch.inference_mode():
                return model(dummy)

        return forward

    def _one_image(self, model: LoadedModel) -> torch.Tensor:
        size = model.spec.input.size
        dummy = torch.zeros(1, 3, size, size, device=self.device)
        if self.device.type == "cpu":
            dummy = dummy.contiguous(memory_format=torch.channels_last)
        return dummy

    def input_fn(
        self,
        body: bytes,
        content_type: str,
        *,
        spec: InputSpec | None = None,
        keep_jpegs: bool = False,
    ) -> ImageBatch | torch.Tensor:
        """Decode a request: images stay PIL images, tensor formats become a float tensor.

        ``spec`` is the loaded model's input spec (the chain passes it; the ImageNet
        default otherwise): JPEGs are decoded at the smallest scale that still covers it.
        With ``keep_jpegs`` (the chain's default ``predict_fn`` runs next) and device
        decoding, JPEGs are checked and kept encoded for :meth:`predict_fn`.
        """
        target = decode_target(spec or InputSpec())
        read = read_image if keep_jpegs and self.decoding == "device" else decode_image
        decoded = codecs.decode(body, content_type, target, self.pool, read)
        if isinstance(decoded, ImageBatch):
            return decoded
        return torch.from_numpy(np.ascontiguousarray(decoded))

    def predict_fn(self, data: Any, model: Any) -> Any:
        """One forward pass for the whole request batch."""
        if isinstance(data, ImageBatch):
            batch = self._image_batch(data.images, input_spec_of(model))
            try:
                with torch.inference_mode():
                    out = model(batch)
            except RuntimeError as exc:
                memory = _as_memory_error(exc)
                if memory is None:
                    raise
                raise memory from None
            return self._scores(out, model)
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if not isinstance(data, torch.Tensor):
            with torch.inference_mode():
                return model(data)
        return self._forward_tensor(data, model)

    def _image_batch(
        self, images: list[Image.Image | EncodedJpeg], spec: InputSpec
    ) -> torch.Tensor:
        """The normalised batch on the device: JPEGs kept encoded are decoded and resized
        there (:func:`preprocess_on_device`); PIL images are resized on the pool's threads
        and copied (from pinned memory, without blocking, on CUDA)."""
        if any(isinstance(image, EncodedJpeg) for image in images):
            return preprocess_on_device(images, spec, self.device, self.pool)
        pil = cast(list[Image.Image], images)  # no JPEG kept encoded: PIL images only
        return to_device(preprocess_images(pil, spec, self.pool), self.device)

    def _forward_tensor(self, data: torch.Tensor, model: Any) -> Any:
        """One forward pass on a request tensor; 400 only when the input provably does not
        fit the model: checked against what it declares before the pass, or, for a model
        that declares nothing, by a dry run on the tensor's shape after the pass failed."""
        if data.numel() == 0:
            raise BadRequestError(f"input tensor of shape {_shape(data)} is empty")
        declared = declared_input(model)
        if declared is not None:
            data = _check_declared(data, declared)
        data = data.to(self.device)
        try:
            with torch.inference_mode():
                return model(data)
        except MEMORY_ERRORS:
            raise  # a server fault: the handler answers 507
        except _FORWARD_ERRORS as exc:
            memory = _as_memory_error(exc) if isinstance(exc, RuntimeError) else None
            if memory is not None:
                raise memory from None
            if declared is not None:
                raise  # the input is what the model declares: its own fault (500)
            reason = rejected_input(model, data)
            if reason is None:
                raise  # not provably the input's fault: a server fault (500)
            raise BadRequestError(
                f"input tensor of shape {_shape(data)} was rejected by the model: {reason}"
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

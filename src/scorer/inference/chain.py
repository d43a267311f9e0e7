"""The inference chain of one model: ``model_fn`` once, then per request
``input_fn -> predict_fn -> output_fn`` (or the user's ``transform_fn``).

The chain knows nothing of MMS or HTTP: it takes bytes and headers, returns bytes and a
content type, and raises :class:`scorer.errors.ScorerError` for client errors.

Its state and contracts:

* :meth:`Chain.load` calls ``model_fn`` and then ``warm_up``, which returns the model to
  serve (it changes nothing); :attr:`Chain.model` is that model and the only state
  :meth:`Chain.load` sets;
* the loaded model carries its input spec (:func:`defaults.input_spec_of`); the default
  ``input_fn`` is given it per request, ``predict_fn`` reads it from the model: one copy;
* ``output_fn``/``transform_fn`` return bytes, a string, any value, or ``(value,
  content_type)``; :func:`codecs.encode` turns that into the body, the one encoding step;
* threads for image work come from the :class:`~scorer.inference.image_pool.ImagePool`
  the defaults were built with, never from process-wide state;
* an MMS batch of requests goes through :mod:`scorer.inference.batching`, which runs the
  same steps (:meth:`Chain.accept_for`, ``input_fn``, one forward for the images of all
  requests, :meth:`Chain.respond`) when :attr:`Chain.batching` allows, and
  :meth:`Chain.transform` per request otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scorer.errors import UnsupportedAcceptError
from scorer.inference import codecs
from scorer.inference import content_types as ct
from scorer.inference.context import RequestContext
from scorer.inference.defaults import CreativeScoringDefaults, input_spec_of
from scorer.inference.user_module import (
    Hook,
    load_user_module,
    make_hook,
    user_batch_hook,
    user_hooks,
)
from scorer.models.spec import InputSpec


@dataclass
class Response:
    """An encoded response body and its content type."""

    body: bytes
    content_type: str


class Chain:
    """A model's hooks (user-defined where given, scorer's defaults otherwise) and the model."""

    def __init__(
        self,
        defaults: CreativeScoringDefaults,
        user: dict[str, Hook],
        default_accept: str,
        batch_predict_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.defaults = defaults
        self.user = user
        self.default_accept = default_accept
        self.model: Any = None
        self.warm_up_ms: float | None = None  # how long the warm-up took, once loaded
        self.model_fn = user.get("model_fn") or make_hook("model_fn", defaults.model_fn)
        self.input_fn = user.get("input_fn") or make_hook("input_fn", self._default_input_fn)
        self.predict_fn = user.get("predict_fn") or make_hook("predict_fn", defaults.predict_fn)
        self.output_fn = user.get("output_fn") or make_hook("output_fn", defaults.output_fn)
        self.transform_fn = user.get("transform_fn")
        self.batch_predict_fn = batch_predict_fn

    @classmethod
    def for_model_dir(
        cls,
        model_dir: Path,
        defaults: CreativeScoringDefaults,
        *,
        program: str = "inference.py",
        default_accept: str = ct.JSON,
    ) -> Chain:
        """Build the chain for a model directory, importing its ``code/<program>`` if any."""
        module = load_user_module(Path(model_dir) / "code", program)
        return cls(defaults, user_hooks(module), default_accept, user_batch_hook(module))

    @property
    def customised(self) -> list[str]:
        """Names of the hooks the user's script overrides."""
        return sorted([*self.user, *(["batch_predict_fn"] if self.batch_predict_fn else [])])

    @property
    def batching(self) -> Literal["default", "user", "none"]:
        """How an MMS batch of requests runs: ``"user"`` through the user's
        ``batch_predict_fn``; ``"default"`` (no user ``input_fn``/``predict_fn``/
        ``output_fn``/``transform_fn``) the images of all requests in one forward pass;
        ``"none"``: :meth:`transform` per request, as the AWS toolkit does."""
        if self.batch_predict_fn is not None:
            return "user"
        if self.transform_fn is None and not {"input_fn", "predict_fn", "output_fn"} & set(
            self.user
        ):
            return "default"
        return "none"

    @property
    def input_spec(self) -> InputSpec:
        """The loaded model's input spec (the ImageNet default before a load or for a model
        that is not a :class:`~scorer.models.loading.LoadedModel`)."""
        return input_spec_of(self.model)

    def load(self, model_dir: Path, context: RequestContext | None = None) -> Any:
        """Call ``model_fn`` once, warm the model up and keep the model ``warm_up`` returns."""
        model = self.model_fn(str(model_dir), context=context)
        started = time.perf_counter()
        self.model = self.defaults.warm_up(model)
        self.warm_up_ms = (time.perf_counter() - started) * 1000
        return self.model

    def _default_input_fn(self, body: bytes, content_type: str) -> Any:
        # JPEGs may stay encoded for the device only when scorer's predict_fn takes them
        keep = "predict_fn" not in self.user and self.batch_predict_fn is None
        return self.defaults.input_fn(body, content_type, spec=self.input_spec, keep_jpegs=keep)

    def _accept(self, header: str) -> str:
        supported = codecs.ENCODERS.supported()
        chosen = ct.choose_accept(header, self.default_accept, supported)
        if chosen is not None:
            return chosen
        if "output_fn" in self.user or self.transform_fn is not None:
            # the user's encoder decides what it supports: give it the first type listed
            return ct.media_type(header.split(",", 1)[0])
        raise UnsupportedAcceptError(
            f"unsupported Accept {header!r}; supported: {', '.join(supported)}"
        )

    def accept_for(self, context: RequestContext) -> str:
        """The response type for a request's Accept header (406 when none fits)."""
        return self._accept(context.accept)

    def decode(self, body: bytes, context: RequestContext) -> Any:
        """``input_fn`` on a request's body, by its bare content type."""
        return self.input_fn(body, content_type_of(context), context=context)

    def respond(self, prediction: Any, accept: str, context: RequestContext) -> Response:
        """``output_fn`` on a request's prediction, then the one encoding step."""
        return _respond(self.output_fn(prediction, accept, context=context), accept)

    def transform(self, body: bytes, context: RequestContext) -> Response:
        """Run one request through the chain."""
        accept = self.accept_for(context)
        if self.transform_fn is not None:
            content_type = content_type_of(context)
            result = self.transform_fn(self.model, body, content_type, accept, context=context)
            return _respond(result, accept)
        data = self.decode(body, context)
        prediction = self.predict_fn(data, self.model, context=context)
        return self.respond(prediction, accept, context)


def content_type_of(context: RequestContext) -> str:
    """A request's bare media type (``application/octet-stream`` when it names none)."""
    return ct.media_type(context.content_type) or ct.OCTET_STREAM


def _respond(result: Any, accept: str) -> Response:
    """The response for a hook's result: ``(value, content_type)`` or ``value``, encoded by
    :func:`codecs.encode` (bytes and strings pass through). A value for an Accept that only a
    user hook understands is encoded as JSON under that content type."""
    content_type = accept
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    encoding = accept if accept in codecs.ENCODERS else ct.JSON
    return Response(body=codecs.encode(result, encoding), content_type=str(content_type))

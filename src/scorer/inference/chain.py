"""The inference chain of one model: ``model_fn`` once, then per request
``input_fn -> predict_fn -> output_fn`` (or the user's ``transform_fn``).

The chain knows nothing of MMS or HTTP: it takes bytes and headers, returns bytes and a
content type, and raises :class:`scorer.errors.ScorerError` for client errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.errors import UnsupportedAcceptError
from scorer.inference import content_types as ct
from scorer.inference.context import RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.inference.user_module import Hook, load_user_module, make_hook, user_hooks


@dataclass
class Response:
    """An encoded response body and its content type."""

    body: bytes
    content_type: str


class Chain:
    """A model's hooks (user-defined where given, scorer's defaults otherwise) and the model."""

    def __init__(
        self, defaults: CreativeScoringDefaults, user: dict[str, Hook], default_accept: str
    ) -> None:
        self.defaults = defaults
        self.user = user
        self.default_accept = default_accept
        self.model: Any = None
        self.model_fn = user.get("model_fn") or make_hook("model_fn", defaults.model_fn)
        self.input_fn = user.get("input_fn") or make_hook("input_fn", defaults.input_fn)
        self.predict_fn = user.get("predict_fn") or make_hook("predict_fn", defaults.predict_fn)
        self.output_fn = user.get("output_fn") or make_hook("output_fn", defaults.output_fn)
        self.transform_fn = user.get("transform_fn")

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
        return cls(defaults, user_hooks(module), default_accept)

    @property
    def customised(self) -> list[str]:
        """Names of the hooks the user's script overrides."""
        return sorted(self.user)

    def load(self, model_dir: Path, context: RequestContext | None = None) -> Any:
        """Call ``model_fn`` once and warm the model up."""
        self.model = self.model_fn(str(model_dir), context=context)
        self.defaults.warm_up(self.model)
        return self.model

    def _accept(self, header: str) -> str:
        chosen = ct.choose_accept(header, self.default_accept)
        if chosen is not None:
            return chosen
        if "output_fn" in self.user or self.transform_fn is not None:
            # the user's encoder decides what it supports: give it the first type listed
            return ct.media_type(header.split(",", 1)[0])
        raise UnsupportedAcceptError(
            f"unsupported Accept {header!r}; supported: {', '.join(ct.RESPONSE_TYPES)}"
        )

    def transform(self, body: bytes, context: RequestContext) -> Response:
        """Run one request through the chain."""
        content_type = ct.media_type(context.content_type) or ct.OCTET_STREAM
        accept = self._accept(context.accept)
        if self.transform_fn is not None:
            result = self.transform_fn(self.model, body, content_type, accept, context=context)
        else:
            data = self.input_fn(body, content_type, context=context)
            prediction = self.predict_fn(data, self.model, context=context)
            result = self.output_fn(prediction, accept, context=context)
        return _as_response(result, accept)


def _as_response(result: Any, accept: str) -> Response:
    content_type = accept
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    if isinstance(result, str):
        result = result.encode()
    elif not isinstance(result, (bytes, bytearray)):
        from scorer.inference.codecs import encode

        result = encode(result, accept if accept in ct.RESPONSE_TYPES else ct.JSON)
    return Response(body=bytes(result), content_type=str(content_type))

"""Loading a model's own ``code/inference.py`` and checking its hooks once, up front."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from scorer.errors import UserCodeError

logger = logging.getLogger(__name__)

HOOK_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
# The opt-in hook for MMS batches: ``batch_predict_fn(data_list, model, contexts)``, one
# prediction per decoded request, in order (see :mod:`scorer.inference.batching`).
BATCH_HOOK = "batch_predict_fn"
# positional arguments each hook takes without the optional request context
BASE_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}


@dataclass(frozen=True)
class Hook:
    """A chain function and whether it asked for the request context."""

    fn: Callable[..., Any]
    takes_context: bool
    context_by_keyword: bool = False

    def __call__(self, *args: Any, context: Any = None) -> Any:
        if self.context_by_keyword:
            return self.fn(*args, context=context)
        if self.takes_context:
            return self.fn(*args, context)
        return self.fn(*args)


def _takes_context(name: str, fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.name == "context" for p in params):
        return True
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > BASE_ARITY[name] + 1 or len(positional) < BASE_ARITY[name]:
        raise UserCodeError(
            f"{name} must take {BASE_ARITY[name]} arguments (plus an optional context), "
            f"got {len(positional)}"
        )
    return len(positional) > BASE_ARITY[name]


def _context_is_keyword_only(fn: Callable[..., Any]) -> bool:
    try:
        param = inspect.signature(fn).parameters.get("context")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is inspect.Parameter.KEYWORD_ONLY


def make_hook(name: str, fn: Callable[..., Any]) -> Hook:
    """Wrap ``fn`` as hook ``name``, deciding once whether (and how) it receives the context."""
    takes = _takes_context(name, fn)
    return Hook(
        fn=fn, takes_context=takes, context_by_keyword=takes and _context_is_keyword_only(fn)
    )


def load_user_module(code_dir: Path, program: str) -> ModuleType | None:
    """Import ``code_dir/program`` (e.g. ``code/inference.py``) if it exists.

    The code dir is put on ``sys.path`` so the script can import its sibling modules.

    Raises:
        UserCodeError: the script cannot be imported (the message names the cause).
    """
    path = code_dir / program
    if not path.is_file():
        return None
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"scorer_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"code/{program} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        logger.exception("importing code/%s failed", program)
        raise UserCodeError(
            f"code/{program} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    return module


def user_hooks(module: ModuleType | None) -> dict[str, Hook]:
    """The hooks a user module defines, validated.

    Raises:
        UserCodeError: ``transform_fn`` is combined with ``input_fn``/``predict_fn``/
            ``output_fn``, or a hook has an unusable signature.
    """
    if module is None:
        return {}
    hooks = {
        name: make_hook(name, getattr(module, name))
        for name in HOOK_NAMES
        if callable(getattr(module, name, None))
    }
    mixed = sorted({"input_fn", "predict_fn", "output_fn"} & hooks.keys())
    if "transform_fn" in hooks and mixed:
        raise UserCodeError(
            f"code/inference.py defines transform_fn together with {', '.join(mixed)}; "
            "define either transform_fn or the input/predict/output functions"
        )
    return hooks


def user_batch_hook(module: ModuleType | None) -> Callable[..., Any] | None:
    """The module's ``batch_predict_fn(data_list, model, contexts)``, checked; None if absent.

    Raises:
        UserCodeError: it is combined with ``transform_fn`` (which leaves nothing to batch),
            or it cannot take three positional arguments.
    """
    fn: Any = getattr(module, BATCH_HOOK, None) if module is not None else None
    if not callable(fn):
        return None
    if callable(getattr(module, "transform_fn", None)):
        raise UserCodeError(
            f"code/inference.py defines {BATCH_HOOK} together with transform_fn; "
            "define either transform_fn or the input/predict/output functions"
        )
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        raise UserCodeError(
            f"{BATCH_HOOK} must take 3 arguments (data_list, model, contexts)"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): trust it
    batch_predict: Callable[..., Any] = fn
    return batch_predict

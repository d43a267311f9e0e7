"""Was a failed forward pass the input's fault? A dry run on the input's shape and dtype only.

A model that declares no input (a bare TorchScript or ``torch.export`` program, anything a
user's ``model_fn`` returns) cannot have a tensor checked before its forward pass. When
that pass raises, :func:`rejected_input` runs the model once more on a fake tensor (torch's
``FakeTensorMode``: shapes, dtypes and devices; no values, no memory, no kernels). If one of
torch's operators then refuses the shapes or dtypes it is given, the failure follows from
the input's shape and dtype alone: the client sent a tensor this model cannot take.

Anything else is not provably the input's fault and stays a server fault: the dry run
passes (the real failure depended on values, memory or the device), fails in the model's
own code (a ``raise``), on an operator fake tensors cannot run (data-dependent control
flow), or on tensors on two devices (the model's placement, not the client's tensor).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# What torch's own shape and dtype checks raise: these exact classes; fake tensors' own
# exceptions (data-dependent output, unsupported operator, ...) are subclasses and excluded.
_SHAPE_CHECK_ERRORS: tuple[type[Exception], ...] = (RuntimeError, IndexError, ValueError)
_MAX_REASON = 300


def first_line(exc: BaseException) -> str:
    """An exception's first line, at most 300 characters (its class name when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0][:_MAX_REASON] if text else type(exc).__name__


class _Watch(TorchDispatchMode):
    """Records the first operator that refuses the shapes or dtypes of its arguments."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.rejected: str | None = None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        try:
            return func(*args, **(kwargs or {}))
        except Exception as exc:
            refused = type(exc) in _SHAPE_CHECK_ERRORS and _one_device(args, kwargs)
            if refused and self.rejected is None:
                self.rejected = first_line(exc)
            raise


def _one_device(args: Any, kwargs: Any) -> bool:
    devices = {
        leaf.device for leaf in tree_leaves((args, kwargs or {}))
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0
    }  # fmt: skip
    return len(devices) <= 1


@contextlib.contextmanager
def _dry_run_settings() -> Iterator[None]:
    """No TorchScript optimisation (it would profile, and specialise on, the fake tensors);
    fake tensors' log of each refused operator, with a traceback, silenced: the caller
    reports the refusal."""
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    disabled = fake_log.disabled
    optimize = torch._C._get_graph_executor_optimize()
    fake_log.disabled = True
    torch._C._set_graph_executor_optimize(False)
    try:
        yield
    finally:
        torch._C._set_graph_executor_optimize(optimize)
        fake_log.disabled = disabled


def rejected_input(model: Any, data: torch.Tensor) -> str | None:
    """Why ``model`` refuses a tensor of ``data``'s shape, dtype and device, or None.

    The reason is the refusing operator's message (e.g. ``a and b must have same reduction
    dim, but got [1, 3] X [4, 2]``). None means the dry run does not prove the input at
    fault. Costs one forward pass of Python dispatch, no device memory; never raises.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    watch = _Watch()
    try:
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True, allow_fallback_kernels=False)
        with _dry_run_settings(), fake_mode:
            fake = fake_mode.from_tensor(data)
            with torch.inference_mode(), watch:
                model(fake)
    except Exception:
        pass
    return watch.rejected

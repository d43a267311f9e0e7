"""Loading a model directory (an extracted ``model.tar.gz``) into a ready-to-run network.

Accepted layouts, in the order they are looked for:

1. ``spec.json`` + weights named by the spec: a ``state_dict`` (``.safetensors``, or
   ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``), a TorchScript file, or a
   ``torch.export`` program (``.pt2``);
2. a bare TorchScript ``model.pt`` with no spec (the AWS PyTorch toolkit's convention):
   served with default preprocessing (224x224, ImageNet mean/std) and generic head names;
3. a bare ``model.pt2`` (``torch.export``), treated like 2.

Unpickling arbitrary objects is refused unless the operator sets ``SCORER_ALLOW_PICKLE``.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorer.errors import ModelLoadError, UnsafeModelError
from scorer.models.family import build_network
from scorer.models.spec import SPEC_FILE, ModelSpec

logger = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"
EXPORT_FILE = "model.pt2"


@dataclass
class LoadedModel:
    """A network on its device, with the spec that says how to feed and name it."""

    network: Any  # nn.Module, ScriptModule or exported module: anything callable on a tensor
    spec: ModelSpec
    device: torch.device
    source: str  # "state_dict" | "torchscript" | "export" | "pickle"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(batch)
        return out

    @property
    def head_names(self) -> list[str]:
        """Output names; generic ``score_<i>`` names are filled in when the spec has none."""
        return self.spec.head_names


def default_spec(name: str, heads: int = 0) -> ModelSpec:
    """The spec assumed for a bare TorchScript/export model: ImageNet-style 224x224 input."""
    from scorer.models.spec import HeadSpec

    return ModelSpec(
        name=name,
        version="0",
        architecture="external",
        heads=tuple(HeadSpec(name=f"score_{i}") for i in range(heads)),
        weights=TORCHSCRIPT_FILE,
    )


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(
        n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") for n in names
    ) or any("/code/" in n for n in names)


def _load_state_dict(path: Path, allow_pickle: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path.name}: not a readable safetensors file: {exc}") from None
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            with open(path, "rb") as handle:
                legacy = handle.read(2) == b"\x80\x02"  # the legacy format's pickle header
            if "mmap" not in str(exc) or not legacy:
                raise
            # the legacy (non-zip) torch.save format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise UnsafeModelError(
                f"{path.name} contains pickled Python objects, which are not loaded by default "
                "because unpickling can run arbitrary code; store a state_dict (safetensors) or "
                "set SCORER_ALLOW_PICKLE=true if you trust this archive"
            ) from None
        logger.warning("loading %s with full unpickling (SCORER_ALLOW_PICKLE=true)", path.name)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(f"{path.name}: cannot be loaded: {exc2}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: not a readable torch file: {exc}") from None


def _from_spec(model_dir: Path, spec: ModelSpec, allow_pickle: bool) -> tuple[Any, str]:
    weights = model_dir / spec.weights
    if not weights.is_file():
        raise ModelLoadError(f"weights file {spec.weights!r} named by {SPEC_FILE} is missing")
    if weights.suffix == ".pt2":
        return _load_export(weights), "export"
    if weights.suffix in {".pt", ".pth"} and _is_torchscript(weights):
        return _load_torchscript(weights), "torchscript"
    state = _load_state_dict(weights, allow_pickle)
    if isinstance(state, nn.Module):  # only reachable with allow_pickle
        return state, "pickle"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{spec.weights}: expected a state_dict (name -> tensor)")
    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelLoadError(
            f"{spec.weights} does not match architecture {spec.architecture!r} with "
            f"{len(spec.heads)} heads: {' '.join(first)}"
        ) from None
    return network, "state_dict"


def _load_torchscript(path: Path) -> Any:
    try:
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: not a loadable TorchScript file: {exc}") from None


def _load_export(path: Path) -> Any:
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: not a loadable torch.export program: {exc}") from None


def load_model(
    model_dir: Path, device: torch.device, *, allow_pickle: bool = False, name: str = "model"
) -> LoadedModel:
    """Load the model in ``model_dir`` onto ``device`` in eval mode.

    Raises:
        ModelLoadError: nothing loadable, or the files are inconsistent.
        UnsafeModelError: the weights need unpickling and ``allow_pickle`` is false.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if (model_dir / SPEC_FILE).is_file():
        spec = ModelSpec.read(model_dir)
        network, source = _from_spec(model_dir, spec, allow_pickle)
    elif (model_dir / TORCHSCRIPT_FILE).is_file():
        spec = default_spec(name)
        network, source = _load_torchscript(model_dir / TORCHSCRIPT_FILE), "torchscript"
    elif (model_dir / EXPORT_FILE).is_file():
        spec = default_spec(name)
        network, source = _load_export(model_dir / EXPORT_FILE), "export"
    else:
        found = sorted(p.name for p in model_dir.iterdir())[:20]
        raise ModelLoadError(
            f"no {SPEC_FILE}, {TORCHSCRIPT_FILE} or {EXPORT_FILE} at the model root "
            f"(found: {', '.join(found) or 'nothing'}); model files must be at the archive root"
        )
    if hasattr(network, "eval") and source != "export":  # export fixes the mode at export time
        network.eval()
    if hasattr(network, "to") and source != "export":
        network = network.to(device)
        if device.type == "cpu" and isinstance(network, nn.Module):
            network = network.to(memory_format=torch.channels_last)
    return LoadedModel(network=network, spec=spec, device=device, source=source)

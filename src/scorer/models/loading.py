"""Loading a model directory (an extracted ``model.tar.gz``) into a ready-to-run network.

Accepted layouts, in the order they are looked for:

1. ``spec.json`` + weights named by the spec: a ``state_dict`` (``.safetensors``, or
   ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``), a TorchScript file, or a
   ``torch.export`` program (``.pt2``);
2. a bare TorchScript ``model.pt`` with no spec (the AWS PyTorch toolkit's convention):
   served with default preprocessing (224x224, ImageNet mean/std) and generic head names;
3. a bare ``model.pt2`` (``torch.export``), treated like 2.

A spec may also name a compiled form to serve (``"serve"``, written by ``scorer package
--compile aoti``): an AOTInductor package, loaded with torch's C++ package loader, which
needs no compiler and unpickles nothing (:func:`load_compiled`). When it cannot run here
(another device, CPU or torch release, a damaged file), the weights are served instead and
a warning says why.

A spec's ``"dtype"`` (``float16``/``bfloat16``) casts the network when it is loaded;
:class:`LoadedModel` casts its input batch to it and returns float32 outputs, so the rest
of the chain is unchanged.

Unpickling arbitrary objects is refused unless the operator sets ``SCORER_ALLOW_PICKLE``.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import platform
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorer.errors import ModelLoadError, UnsafeModelError
from scorer.models.family import build_network
from scorer.models.spec import SPEC_FILE, ModelSpec, ServeSpec

logger = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"
EXPORT_FILE = "model.pt2"
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A network on its device, with the spec that says how to feed and name it."""

    network: Any  # nn.Module, ScriptModule or exported module: anything callable on a tensor
    spec: ModelSpec
    device: torch.device
    source: str  # "state_dict" | "torchscript" | "export" | "pickle" | "aoti"
    # why the compiled form the spec names is not the one served (None: it is, or none named)
    fallback_reason: str | None = None
    dtype: torch.dtype = torch.float32  # the network's precision (the spec's "dtype")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.dtype != torch.float32 and batch.is_floating_point():
            out: torch.Tensor = self.network(batch.to(self.dtype))
            return out.float() if out.is_floating_point() else out
        out = self.network(batch)
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
        return _load_export(weights, allow_pickle), "export"
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


def _load_export(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        _check_export_unpickling(path)
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: not a loadable torch.export program: {exc}") from None


# torch.export.load unpickles some members of a .pt2 with the full unpickler: weights and
# constants marked "use_pickle" in their configs, legacy weight/constant files and sample
# inputs (after a weights-only attempt fails), Python objects with ``pickle.loads``; and it
# opens any AOTInductor library the file holds. Checked before it runs (see below).
_EXPORT_LEGACY_PICKLES = frozenset(
    {"serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"}
)
_EXPORT_CONFIGS = {
    "_weights_config.json": "data/weights/",
    "_constants_config.json": "data/constants/",
}


def _check_export_unpickling(path: Path) -> None:
    """Refuse a ``torch.export`` file whose loading would unpickle anything but tensors and
    containers of them (what ``torch.load(weights_only=True)`` accepts), or that holds
    compiled code.

    Raises:
        UnsafeModelError: it would.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: torch.export.load refuses it without unpickling anything
    hint = (
        "which torch.export.load would unpickle or run; store a state_dict (safetensors) or "
        "set SCORER_ALLOW_PICKLE=true if you trust this archive"
    )
    with archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
        if len(set(names)) != len(names):  # readers may disagree on which copy they read
            raise UnsafeModelError(f"{path.name} holds two members of the same name, {hint}")
        pickled: list[str] = []
        for name in names:
            rel = name.split("/", 1)[1] if "/" in name else name
            root = name[: len(name) - len(rel)]
            if rel.startswith(("data/aotinductor/", "data/executorch/", "data/mtia")):
                raise UnsafeModelError(f"{path.name} holds compiled code ({rel}), {hint}")
            legacy = rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt")
            if rel.startswith("data/sample_inputs/") or legacy or name in _EXPORT_LEGACY_PICKLES:
                pickled.append(name)
            for suffix, folder in _EXPORT_CONFIGS.items():
                if rel.startswith(folder) and rel.endswith(suffix):
                    pickled += _pickled_payloads(archive, name, root + folder, path.name, hint)
        for name in pickled:
            try:
                data = archive.read(name)
            except KeyError:  # a name torch may resolve differently ("/abs", "../x")
                raise UnsafeModelError(
                    f"{path.name} marks {name} as pickled but does not hold it, {hint}"
                ) from None
            try:
                with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4"
                    warnings.simplefilter("ignore")
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise UnsafeModelError(
                    f"{path.name} holds pickled Python objects ({name}), {hint}"
                ) from None
            except Exception as exc:
                reason = _first_line(exc)
                raise ModelLoadError(f"{path.name}: unreadable member {name}: {reason}") from None


def _pickled_payloads(
    archive: zipfile.ZipFile, config: str, folder: str, label: str, hint: str
) -> list[str]:
    """The payload files a .pt2 weights/constants config marks as pickled."""
    try:
        entries = json.loads(archive.read(config)).get("config", {})
        items = [(str(e.get("path_name", "")), bool(e.get("use_pickle"))) for e in entries.values()]
    except (ValueError, AttributeError, TypeError):
        return []  # unreadable: torch.export.load fails on it before unpickling
    for path_name, _ in items:
        if path_name.startswith(("custom_obj_", "opaque_obj_")):
            raise UnsafeModelError(f"{label} holds Python objects ({path_name}), {hint}")
    return [folder + path_name for path_name, use_pickle in items if use_pickle]


def load_model(
    model_dir: Path,
    device: torch.device,
    *,
    allow_pickle: bool = False,
    name: str = "model",
    compiled: bool = True,
    dtype: str | None = None,
) -> LoadedModel:
    """Load the model in ``model_dir`` onto ``device`` in eval mode, in the precision its
    spec asks for (``dtype``: this one instead, e.g. ``"float32"`` to compare with).

    The compiled form its spec names is served when it runs here (``compiled=False``: the
    eager network from the weights, whatever the spec names).

    Raises:
        ModelLoadError: nothing loadable, or the files are inconsistent.
        UnsafeModelError: the weights need unpickling and ``allow_pickle`` is false.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    fallback: str | None = None
    if (model_dir / SPEC_FILE).is_file():
        spec = ModelSpec.read(model_dir)
        if spec.serve is not None and compiled and (dtype or spec.dtype) == "float32":
            try:
                forward = load_compiled(model_dir, spec, device)
            except ModelLoadError as exc:
                fallback = exc.message
                logger.warning(
                    "%s: not serving the compiled form %s (%s): %s; serving the weights %s",
                    spec.name, spec.serve.file, spec.serve.form, fallback, spec.weights
                )  # fmt: skip
            else:
                return LoadedModel(forward, spec, device, source=spec.serve.form)
        network, source = _from_spec(model_dir, spec, allow_pickle)
    elif (model_dir / TORCHSCRIPT_FILE).is_file():
        spec = default_spec(name)
        network, source = _load_torchscript(model_dir / TORCHSCRIPT_FILE), "torchscript"
    elif (model_dir / EXPORT_FILE).is_file():
        spec = default_spec(name)
        network, source = _load_export(model_dir / EXPORT_FILE, allow_pickle), "export"
    else:
        found = sorted(p.name for p in model_dir.iterdir())[:20]
        raise ModelLoadError(
            f"no {SPEC_FILE}, {TORCHSCRIPT_FILE} or {EXPORT_FILE} at the model root "
            f"(found: {', '.join(found) or 'nothing'}); model files must be at the archive root"
        )
    if hasattr(network, "eval") and source != "export":  # export fixes the mode at export time
        network.eval()
    if (dtype or spec.dtype) not in TORCH_DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; known: {', '.join(TORCH_DTYPES)}")
    precision = TORCH_DTYPES[dtype or spec.dtype]
    if precision != torch.float32 and (source == "export" or not hasattr(network, "to")):
        raise ModelLoadError(
            f"{SPEC_FILE} asks for {dtype or spec.dtype} inference, but a {source} network "
            "runs in the precision it was exported in: use a state_dict or TorchScript"
        )
    if hasattr(network, "to") and source != "export":
        network = network.to(device)
        if precision != torch.float32:
            network = network.to(precision)
        if device.type == "cpu" and isinstance(network, nn.Module):
            network = network.to(memory_format=torch.channels_last)
    return LoadedModel(
        network, spec, device, source=source, fallback_reason=fallback, dtype=precision
    )


# -- compiled forms ---------------------------------------------------------------------------

# What an AOTInductor package may hold, under its one root folder: the archive's own
# bookkeeping and the compiled model (generated C++ kept for reference, metadata, and the
# shared library, which holds the weights). Nothing else: in particular no exported program
# (``models/``), pickled weights or constants (``data/weights/``, ``data/constants/``),
# which torch's Python loader would unpickle.
_AOTI_BOOKKEEPING = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)
_AOTI_MODEL_DIR = "data/aotinductor/model/"
_AOTI_MODEL_SUFFIXES = (".so", ".cpp", ".json")
# ATen's CPU capability (what the host runs), ordered, for x86-64; a package compiled for a
# vector ISA runs on hosts whose capability is at least that one.
_X86_CAPABILITY = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}


class CompiledForward:
    """An AOTInductor-compiled network as a callable on an image batch.

    It checks what eager torch would refuse (the compiled code checks no shapes), puts the
    batch in the memory format it was compiled for, and splits batches larger than the
    largest it was compiled for.
    """

    def __init__(self, runner: Any, spec: ModelSpec, serve: ServeSpec, device: torch.device):
        self.runner = runner
        self.size = spec.input.size
        self.outputs = len(spec.heads)
        self.max_batch = serve.max_batch
        self.device = device
        self.memory_format = (
            torch.channels_last if serve.layout == "channels_last" else torch.contiguous_format
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"expected a tensor, got {type(batch).__name__}")
        shape = tuple(int(n) for n in batch.shape)
        if len(shape) != 4 or shape[1:] != (3, self.size, self.size) or shape[0] < 1:
            raise ValueError(
                f"compiled model takes (batch >= 1, 3, {self.size}, {self.size}) images, "
                f"got shape {shape}"
            )
        if batch.dtype != torch.float32:
            raise TypeError(f"compiled model takes float32 images, got {batch.dtype}")
        if batch.device.type != self.device.type:
            raise RuntimeError(
                f"compiled model runs on {self.device}, the batch is on {batch.device}"
            )
        batch = batch.contiguous(memory_format=self.memory_format)
        if shape[0] <= self.max_batch:
            return self._run(batch)
        return torch.cat([self._run(part) for part in torch.split(batch, self.max_batch)])

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = self.runner.run([batch])
        if len(outputs) != 1:
            raise RuntimeError(f"compiled model returned {len(outputs)} tensors, expected 1")
        out: torch.Tensor = outputs[0]
        return out


def _aoti_loader() -> Any:
    loader = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader is None:
        raise ModelLoadError("this torch build has no AOTInductor package loader")
    return loader


def aoti_metadata(path: Path) -> dict[str, str]:
    """An AOTInductor package's metadata (device, machine, CPU ISA), read without loading
    its library.

    Raises:
        ModelLoadError: no readable metadata.
    """
    try:
        return dict(_aoti_loader().load_metadata_from_package(str(path), "model"))
    except ModelLoadError:
        raise
    except Exception as exc:
        reason = _first_line(exc)
        raise ModelLoadError(f"{path.name}: unreadable package metadata: {reason}") from None


def _check_aoti_members(path: Path) -> None:
    """Refuse a package that holds anything but the compiled model (see above)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{path.name} is not a readable AOTInductor package: {exc}") from None
    if len(set(names)) != len(names):  # readers may disagree on which copy they read
        raise ModelLoadError(f"{path.name} holds two members of the same name")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ModelLoadError(f"{path.name} is not an AOTInductor package (one root folder)")
    libraries = 0
    for name in names:
        inner = name.split("/", 1)[1]
        if inner in _AOTI_BOOKKEEPING:
            continue
        leaf = inner.removeprefix(_AOTI_MODEL_DIR)
        if leaf == inner or "/" in leaf or not leaf.endswith(_AOTI_MODEL_SUFFIXES):
            raise ModelLoadError(
                f"{path.name} holds {inner!r}, which is not part of a compiled model; "
                "only AOTInductor packages written by scorer package are served"
            )
        libraries += leaf.endswith(".so")
    if libraries != 1:
        # without its shared library, torch's loader would compile the C++ sources
        raise ModelLoadError(f"{path.name} holds {libraries} compiled libraries, expected 1")


def _check_host(serve: ServeSpec, metadata: dict[str, str], device: torch.device) -> None:
    """Refuse a package this host, device or torch cannot run (before loading its code)."""
    if not metadata.get("AOTI_DEVICE_KEY") or not metadata.get("AOTI_MACHINE"):
        raise ModelLoadError(f"{serve.file}: its metadata names no device or machine")
    built_for = metadata["AOTI_DEVICE_KEY"]
    if built_for != device.type or serve.device != device.type:
        raise ModelLoadError(f"it was compiled for {built_for}, this worker runs on {device.type}")
    machine = metadata["AOTI_MACHINE"]
    if machine != platform.machine() or (serve.machine and serve.machine != machine):
        raise ModelLoadError(f"it was compiled for {machine}, this host is {platform.machine()}")
    here = torch.__version__.split("+")[0]
    if serve.torch and serve.torch != here:
        raise ModelLoadError(f"it was compiled with torch {serve.torch}, this host has {here}")
    if device.type == "cpu":
        needed = (metadata.get("AOTI_CPU_ISA") or serve.cpu_isa or "DEFAULT").split()[0].upper()
        host = torch.backends.cpu.get_cpu_capability().upper()
        if needed in _X86_CAPABILITY and host in _X86_CAPABILITY:
            fits = _X86_CAPABILITY[host] >= _X86_CAPABILITY[needed]
        else:
            fits = needed == host
        if not fits:
            raise ModelLoadError(f"it was compiled for {needed} CPUs, this host's CPU is {host}")


def load_compiled(model_dir: Path, spec: ModelSpec, device: torch.device) -> CompiledForward:
    """Load the compiled form ``spec.serve`` names and check it runs a batch of one.

    Only torch's C++ package loader runs: it opens the package's shared library and needs
    no compiler; torch's Python loader (``torch._inductor.aoti_load_package``) is not used,
    as it also unpickles exported programs a package may hold, probes for a C++ compiler
    and imports Inductor (about a second). The package is checked first: only the compiled
    model's files, one shared library, built for this device, CPU and torch.

    Raises:
        ModelLoadError: the package is missing, not one scorer wrote, cannot run here, or
            fails its first forward pass.
    """
    serve = spec.serve
    if serve is None:
        raise ModelLoadError(f"{SPEC_FILE} names no compiled form")
    path = Path(model_dir) / serve.file
    if not path.is_file():
        raise ModelLoadError(f"{serve.file} named by {SPEC_FILE} is missing")
    _check_aoti_members(path)
    metadata = aoti_metadata(path)
    _check_host(serve, metadata, device)
    loader = _aoti_loader()
    index = device.index if device.index is not None else -1
    try:
        runner = loader(str(path), "model", False, 1, index)
    except Exception as exc:
        raise ModelLoadError(f"{serve.file}: cannot be loaded: {_first_line(exc)}") from None
    forward = CompiledForward(runner, spec, serve, device)
    size = spec.input.size
    try:
        with torch.inference_mode():
            out = forward(torch.zeros(1, 3, size, size, device=device))
    except Exception as exc:
        reason = _first_line(exc)
        raise ModelLoadError(f"{serve.file}: first forward pass failed: {reason}") from None
    if tuple(out.shape) != (1, len(spec.heads)):
        raise ModelLoadError(
            f"{serve.file} returns shape {tuple(out.shape)} for one image, but {SPEC_FILE} "
            f"names {len(spec.heads)} heads"
        )
    return forward


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

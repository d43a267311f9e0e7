"""The bench's creative scorers: real torchvision backbones, seeded weights, real archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from scorer.inference.chain import Chain
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.models.archive import pack_directory, safe_extract
from scorer.models.family import build_network
from scorer.models.spec import ModelSpec
from scorer.serving.resources import configure_threads

BACKBONES = ("mobilenet_v3_small", "resnet50")
HEADS = ("appeal", "ctr", "brand_safety")
REFERENCE_SCRIPT = Path(__file__).with_name("reference_inference.py")


def spec_for(backbone: str, name: str, *, size: int = 224, dtype: str = "float32") -> ModelSpec:
    """A ``size`` x ``size`` (224: resize 256, centre crop) creative-scorer spec, served in
    ``dtype``."""
    return ModelSpec.from_dict(
        {
            "name": name,
            "version": "1",
            "architecture": backbone,
            "input": {"size": size, "resize": size * 256 // 224, "policy": "resize_center_crop"},
            "heads": [{"name": h, "kind": "probability"} for h in HEADS],
            "dtype": dtype,
        }
    )


def calibrate_batch_norm(network: torch.nn.Module, size: int) -> torch.nn.Module:
    """Gather ``network``'s batch-norm statistics on seeded random inputs, so that its
    outputs depend on its input (freshly initialised statistics can make them constant)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    network.train()
    with torch.no_grad():
        for _ in range(2):
            network(torch.randn(8, 3, size, size))
    return network.eval()


def build_archive(
    backbone: str,
    name: str,
    out_dir: Path,
    *,
    reference: bool = False,
    size: int = 224,
    calibrated: bool = False,
    dtype: str = "float32",
) -> Path:
    """Write ``out_dir/<name>.tar.gz`` (optionally with the reference handler as user code,
    or with batch-norm statistics gathered: :func:`calibrate_batch_norm`)."""
    staging = out_dir / f"{name}.src"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    spec = spec_for(backbone, name, size=size, dtype=dtype)
    torch.manual_seed(0)
    network = build_network(spec)
    if calibrated:
        calibrate_batch_norm(network, size)
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(staging / spec.weights))
    (staging / "spec.json").write_text(spec.to_json())
    if reference:
        (staging / "code").mkdir()
        shutil.copy(REFERENCE_SCRIPT, staging / "code" / "inference.py")
    archive = out_dir / f"{name}.tar.gz"
    pack_directory(staging, archive)
    shutil.rmtree(staging)
    return archive


def extract(archive: Path, models_root: Path, name: str) -> Path:
    """Extract as SageMaker does: ``<models root>/<name>/model``."""
    target = models_root / name / "model"
    shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.mkdir(parents=True)
    safe_extract(archive, target)
    return target


def serving_chain(model_dir: Path, threads: int) -> Chain:
    """The worker's chain for ``model_dir`` in this process, loaded, with a worker's thread
    budget of ``threads`` for torch and image decoding (the in-process limits)."""
    pool = configure_threads(threads)
    defaults = CreativeScoringDefaults(
        torch.device("cpu"), allow_pickle=False, model_name="x", pool=pool
    )
    chain = Chain.for_model_dir(model_dir, defaults)
    chain.load(model_dir)
    return chain

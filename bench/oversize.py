"""A model whose forward pass really allocates more memory than its device has, on demand.

The GPU check serves it to see a real out-of-memory inside a forward pass answered 507 by
the real handler path while the worker keeps serving. It is a creative scorer (spec +
safetensors, loaded by scorer's own ``load_model``) wrapped by a ``code/inference.py``
``model_fn``: an image batch whose first input value is :data:`TRIGGER` makes the forward
pass allocate twice the device's memory (16 TiB on the CPU) before scoring.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np

from bench import models

TRIGGER = 1024.0  # exact in float16 and bfloat16 too
DEVICE_VARIABLE = "GPU_CHECK_DEVICE"  # the torch device the model_fn loads the model on

SCRIPT = f'''
"""The GPU check's oversize model: a real allocation past the device's memory on demand."""
import os
from pathlib import Path

import torch

from scorer.models.loading import load_model

TRIGGER = {TRIGGER!r}


class Oversize(torch.nn.Module):
    def __init__(self, network, nbytes):
        super().__init__()
        self.network = network
        self.nbytes = nbytes

    def forward(self, x):
        if float(x.flatten()[0]) == TRIGGER:
            held = torch.empty(self.nbytes, dtype=torch.uint8, device=x.device)
            return self.network(x) + held[:1].to(x.dtype)
        return self.network(x)


def model_fn(model_dir):
    device = torch.device(os.environ.get("{DEVICE_VARIABLE}", "cpu"))
    model = load_model(Path(model_dir), device, name="oversize")
    if device.type == "cuda":
        nbytes = 2 * torch.cuda.get_device_properties(device).total_memory
    else:
        nbytes = 1 << 44
    model.network = Oversize(model.network, nbytes)
    return model
'''


def build_model_dir(backbone: str, name: str, models_root: Path, *, size: int) -> Path:
    """``<models_root>/<name>/model``: the creative scorer plus the oversize ``model_fn``."""
    build = models_root.parent / "build-oversize"
    build.mkdir(parents=True, exist_ok=True)
    model_dir = models.extract(
        models.build_archive(backbone, name, build, size=size), models_root, name
    )
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SCRIPT)
    shutil.rmtree(build, ignore_errors=True)
    return model_dir


def trigger_body(size: int) -> bytes:
    """An ``.npy`` image batch of one whose first value is :data:`TRIGGER`."""
    batch = np.zeros((1, 3, size, size), dtype=np.float32)
    batch.flat[0] = TRIGGER
    buffer = io.BytesIO()
    np.save(buffer, batch, allow_pickle=False)
    return buffer.getvalue()


def device_environ(device: str) -> dict[str, str]:
    """The environment that tells the oversize ``model_fn`` its device."""
    return {**os.environ, DEVICE_VARIABLE: device}

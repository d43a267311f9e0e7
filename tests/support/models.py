"""Build real model directories and archives for tests (real torch weights, real files)."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from scorer.models.family import build_network
from scorer.models.spec import ModelSpec

# A user script whose hooks take the request context: echoes the body size, the "tag"
# custom attribute and the inference id (when the caller set one), and sets a response
# custom attribute.
ECHO_SCRIPT = """
import json

def input_fn(body, content_type, context):
    echoed = {"n": len(body), "tag": context.attribute("tag")}
    if context.inference_id:
        echoed["inference_id"] = context.inference_id
    return echoed

def predict_fn(data, model):
    return data

def output_fn(prediction, accept, context):
    context.response_custom_attributes = "echo=" + str(prediction["tag"])
    return json.dumps(prediction), "application/json"
"""

# A user script whose model_fn fails.
FAILING_MODEL_FN = """
def model_fn(model_dir):
    raise RuntimeError("weights are corrupt on purpose")
"""


def creative_model_dir(
    root: Path,
    name: str,
    *,
    heads: tuple[str, ...] = ("appeal", "clarity"),
    size: int = 64,
    seed: int = 0,
    version: str = "1",
) -> Path:
    """A spec.json + model.safetensors model (creative_cnn backbone) at ``root/name/model``."""
    model_dir = root / name / "model"
    model_dir.mkdir(parents=True)
    spec = ModelSpec.from_dict(
        {
            "name": name,
            "version": version,
            "architecture": "creative_cnn",
            "input": {"size": size, "resize": size + size // 8},
            "heads": [{"name": h, "kind": "regression"} for h in heads],
        }
    )
    torch.manual_seed(seed)
    save_file(build_network(spec).state_dict(), str(model_dir / "model.safetensors"))
    (model_dir / "spec.json").write_text(spec.to_json())
    return model_dir


class Affine(torch.nn.Module):
    """y = x @ W + b with fixed weights, so tests can check exact outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]))
            self.linear.bias.copy_(torch.tensor([0.5, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float())


def torchscript_model_dir(root: Path, name: str) -> Path:
    """A bare TorchScript ``model.pt`` (the AWS toolkit's convention): 4 inputs -> 2 outputs."""
    model_dir = root / name / "model"
    model_dir.mkdir(parents=True)
    torch.jit.script(Affine()).save(str(model_dir / "model.pt"))
    return model_dir


def add_code(model_dir: Path, inference_py: str, requirements: str | None = None) -> Path:
    """Add ``code/inference.py`` (and optionally ``code/requirements.txt``) to a model dir."""
    code = model_dir / "code"
    code.mkdir(exist_ok=True)
    (code / "inference.py").write_text(textwrap.dedent(inference_py))
    if requirements is not None:
        (code / "requirements.txt").write_text(requirements)
    return model_dir


def tar_model_dir(model_dir: Path, out: Path) -> Path:
    """Pack a model dir as SageMaker expects: its files at the archive root."""
    with tarfile.open(out, "w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    return out


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (320, 240), seed: int = 0) -> bytes:
    """A real encoded image with some structure (gradient + rectangle)."""
    gen = torch.Generator().manual_seed(seed)
    colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=gen))
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    overlay = Image.new("RGB", (size[0] // 2, size[1] // 2), colour)
    img.paste(overlay, (size[0] // 4, size[1] // 4))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


# A model whose answer is {"version": "<version>"} whatever the request (hot reload tests).
VERSION_SCRIPT = """import json


def input_fn(body, content_type, context):
    return None


def predict_fn(data, model):
    return "{version}"


def output_fn(prediction, accept, context):
    return json.dumps({{"version": prediction}}), "application/json"
"""

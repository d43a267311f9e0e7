"""torch.export programs (``.pt2``) are served like TorchScript: bare or named by a spec."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scorer.models.loading import load_model
from tests.support.models import Affine, creative_model_dir

CPU = torch.device("cpu")


def test_bare_export_program(tmp_path: Path) -> None:
    program = torch.export.export(Affine(), (torch.zeros(1, 4),))
    torch.export.save(program, tmp_path / "model.pt2")
    model = load_model(tmp_path, CPU, name="exported")
    assert model.source == "export"
    out = model(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert out.tolist() == [[1.5, 8.0]]


def test_spec_naming_an_export_program(tmp_path: Path) -> None:
    model_dir = creative_model_dir(tmp_path, "m", heads=("appeal", "ctr"))
    network = load_model(model_dir, CPU).network
    program = torch.export.export(network, (torch.zeros(1, 3, 64, 64),))
    torch.export.save(program, model_dir / "model.pt2")
    spec = json.loads((model_dir / "spec.json").read_text())
    spec["weights"] = "model.pt2"
    (model_dir / "spec.json").write_text(json.dumps(spec))
    exported = load_model(model_dir, CPU)
    assert exported.source == "export"
    assert exported.head_names == ["appeal", "ctr"]
    batch = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(exported(batch), network(batch), atol=1e-5)

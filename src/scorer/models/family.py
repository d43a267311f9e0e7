"""The creative-scoring model family: a torchvision backbone plus named score heads.

Backbones are built with ``weights=None``: scorer never downloads weights; they come from
the model archive. The small ``creative_cnn`` backbone is scorer's own, sized for the
built-in demo model that trains on a CPU in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scorer.errors import ModelLoadError
from scorer.models.spec import ModelSpec


class CreativeScorer(nn.Module):
    """Backbone features -> one linear layer with one output per head.

    Probability heads pass through a sigmoid; regression heads are returned as-is.
    The output is a ``(batch, len(heads))`` float tensor in head order.
    """

    def __init__(self, backbone: nn.Module, features: int, probability_mask: list[bool]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.Linear(features, len(probability_mask))
        self.register_buffer(
            "probability_mask", torch.tensor(probability_mask, dtype=torch.bool), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.heads(self.backbone(x))
        # no data-dependent branch, so the network can be traced by torch.export
        mask = self.probability_mask  # a buffer; typed Tensor | Module by nn.Module.__getattr__
        return torch.where(mask, torch.sigmoid(raw), raw)  # type: ignore[arg-type]


def _creative_cnn() -> tuple[nn.Module, int]:
    def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    # The stride-2 first block still looks at every pixel's 3x3 neighbourhood (the high
    # frequencies sharpness depends on) at a quarter of the cost of a full-resolution one.
    # Global mean and max pooling keep both "how much" and "how strong" statistics; the hidden
    # layer after pooling lets the heads combine them non-linearly (a contrast is a standard
    # deviation, sqrt(E[x^2] - E[x]^2), which no linear function of pooled features gives).
    features = nn.Sequential(
        block(3, 16, stride=2),
        block(16, 32),
        nn.MaxPool2d(2),
        block(32, 48),
        nn.MaxPool2d(2),
        block(48, 64),
    )
    hidden = nn.Sequential(nn.Linear(128, 128), nn.ReLU(inplace=True))

    class _Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.hidden = hidden

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x)
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            out: torch.Tensor = self.hidden(pooled)
            return out

    return _Pooled(), 128


def _torchvision(name: str) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        import torchvision

        net = torchvision.models.get_model(name, weights=None)
        if hasattr(net, "fc"):  # resnet
            features = net.fc.in_features
            net.fc = nn.Identity()
        elif name.startswith("convnext"):
            last = net.classifier[-1]
            features = last.in_features
            net.classifier[-1] = nn.Identity()
        else:  # efficientnet, mobilenet_v3: classifier is a Sequential ending in Linear
            first = next(m for m in net.classifier if isinstance(m, nn.Linear))
            if name.startswith("mobilenet_v3"):
                # keep the hidden Linear+Hardswish, drop dropout and the 1000-way layer
                features = first.out_features
                net.classifier = nn.Sequential(net.classifier[0], net.classifier[1])
            else:
                features = first.in_features
                net.classifier = nn.Identity()
        return net, features

    return build


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "creative_cnn": _creative_cnn,
    **{
        name: _torchvision(name)
        for name in (
            "resnet18",
            "resnet50",
            "efficientnet_b0",
            "mobilenet_v3_small",
            "mobilenet_v3_large",
            "convnext_tiny",
        )
    },
}


def build_network(spec: ModelSpec) -> CreativeScorer:
    """Build the (untrained) network a spec describes.

    Raises:
        ModelLoadError: the architecture is not part of the family.
    """
    try:
        factory = BACKBONES[spec.architecture]
    except KeyError:
        raise ModelLoadError(
            f"unknown architecture {spec.architecture!r}; known: {sorted(BACKBONES)}"
        ) from None
    backbone, features = factory()
    return CreativeScorer(backbone, features, [h.kind == "probability" for h in spec.heads])

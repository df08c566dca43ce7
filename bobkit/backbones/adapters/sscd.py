"""SSCD copy-detection descriptors: a timm trunk, GeM pooling (p = 3), a linear projection and L2
normalisation, the architecture SSCD describes for its released models (ResNet-50 → 512-d,
ResNeXt-101 32x4d → 1024-d). bobkit builds it for random init; with weights, the released
TorchScript module takes its place (TorchScriptDescriptor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# SSCD's released descriptor sizes per trunk.
SSCD_DIMS = {"resnet50": 512, "resnext101_32x4d": 1024}


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class _DescriptorHead(nn.Module):
    """timm-style classifier plumbing shared by both descriptor modules."""

    num_features: int

    def _init_head(self, dim: int, num_classes: int) -> None:
        self.num_features = dim
        self.head_hidden_size = dim
        self.num_classes = num_classes
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self._init_head(self.num_features, num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SSCDDescriptor(_DescriptorHead):
    def __init__(self, trunk: str, num_classes: int = 0, **trunk_kwargs) -> None:
        import timm

        super().__init__()
        if trunk not in SSCD_DIMS:
            raise ValueError(f"SSCD has no released model with trunk {trunk!r}; known: {', '.join(SSCD_DIMS)}")
        self.trunk = timm.create_model(trunk, pretrained=False, num_classes=0, global_pool="", **trunk_kwargs)
        self.pool = GeM(3.0)
        self.proj = nn.Linear(self.trunk.num_features, SSCD_DIMS[trunk])
        self.feature_info = list(self.trunk.feature_info)
        self._init_head(SSCD_DIMS[trunk], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pool(self.trunk.forward_features(x))), dim=-1)

    def forward_intermediates(self, x, indices=None, intermediates_only=False, **kw):
        return self.trunk.forward_intermediates(x, indices=indices, intermediates_only=intermediates_only, **kw)


class TorchScriptDescriptor(_DescriptorHead):
    """The released SSCD TorchScript module (already L2-normalised descriptors)."""

    def __init__(self, script: nn.Module, dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.script = script
        self.feature_info = [{"num_chs": dim, "reduction": 32, "module": "script"}]
        self._init_head(dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)

    def forward_intermediates(self, x, indices=None, intermediates_only=False, **_):
        from bobkit.errors import BadInput

        raise BadInput("SSCD's TorchScript descriptor gives an embedding only, no feature maps for detection")

"""A backbone as a multi-scale feature extractor: a list of NCHW maps, one per requested stage.

It wraps the whole backbone (keys stay `model.<backbone key>`) and asks it for
`forward_intermediates`, which timm's ResNet, ConvNeXt, SwinV2, ViT and SAM implement and
bobkit's own adapters mirror; layers after the last requested stage are pruned so that no
parameter goes unused in training.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def default_out_indices(feature_info: list[dict], plain_vit: bool) -> list[int]:
    """Hierarchical backbones: every stage at stride ≥ 4. Plain ViTs: the last block only."""
    if plain_vit:
        return [len(feature_info) - 1]
    return [i for i, f in enumerate(feature_info) if f["reduction"] >= 4]


class MultiScaleFeatures(nn.Module):
    def __init__(self, model: nn.Module, out_indices: Sequence[int]) -> None:
        super().__init__()
        info = list(model.feature_info)
        bad = [i for i in out_indices if not -len(info) <= i < len(info)]
        if bad:
            raise ValueError(f"out_indices {bad} out of range for {len(info)} feature stages")
        self.out_indices = [i % len(info) for i in out_indices]
        if hasattr(model, "prune_intermediate_layers"):
            model.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.feature_dims = [int(info[i]["num_chs"]) for i in self.out_indices]
        self.strides = [int(info[i]["reduction"]) for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True))

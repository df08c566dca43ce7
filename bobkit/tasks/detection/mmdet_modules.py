"""bobkit's modules in mmdet's MODELS registry: ONE backbone adapter for every zoo backbone,
a ViTDet-style simple feature pyramid, and a channels-first LayerNorm for the ViTDet heads.

Importing this module registers them (mmdet and torch must be importable).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from bobkit.tasks.detection.features import build_features


@MODELS.register_module(name="BobkitLN2d", force=True)
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's neck and head norm)."""

    _abbr_ = "ln"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


@MODELS.register_module(name="BobkitBackbone", force=True)
class ZooBackbone(BaseModule):
    """Any backbone of bobkit's zoo as an mmdet backbone: a tuple of NCHW maps, finest first.

    `frozen` stops every parameter from training and keeps the whole backbone in eval mode
    (BatchNorm statistics and dropout included); `norm_eval` keeps only BatchNorm layers in eval
    mode while the weights train (the usual detection fine-tuning of BN backbones).
    """

    def __init__(self, backbone_spec: dict[str, Any], pretrained: bool, resolution: int, drop_path: float,
                 frozen: bool, norm_eval: bool, init_cfg: Any = None) -> None:
        super().__init__(init_cfg=init_cfg)
        built, self.layout = build_features(backbone_spec, pretrained=pretrained, resolution=resolution,
                                            drop_path=drop_path)
        self.body = built.model
        self.frozen = frozen
        self.norm_eval = norm_eval
        if frozen:
            self.body.requires_grad_(False)
            self.body.eval()

    def init_weights(self) -> None:
        """The zoo already loaded (or randomly initialised) the weights: mmengine must not re-initialise them."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = self.body(x)
        if isinstance(outs, torch.Tensor):
            outs = [outs]
        maps = []
        for i, channels in zip(self.layout.indices, self.layout.channels):
            y = outs[i]
            if y.shape[1] != channels:
                raise RuntimeError(f"backbone level {i} has {y.shape[1]} channels, the zoo said {channels}")
            maps.append(y)
        return tuple(maps)

    def train(self, mode: bool = True) -> "ZooBackbone":
        super().train(mode)
        if self.frozen:
            self.body.eval()
        elif mode and self.norm_eval:
            for module in self.body.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


@MODELS.register_module(name="BobkitSimpleFeaturePyramid", force=True)
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's pyramid from one stride-s map: deconvolutions up to s/4 and s/2, max-pool to 2s,
    a 1x1 and a 3x3 conv with LayerNorm on each level, and (extra_level) a stride-2 subsample of
    the coarsest level for the RPN's largest anchors."""

    def __init__(self, in_channels: int, out_channels: int, scale_factors=(4.0, 2.0, 1.0, 0.5),
                 extra_level: bool = True, init_cfg: Any = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.extra_level = extra_level
        self.stages = nn.ModuleList()
        for scale in scale_factors:
            layers: list[nn.Module]
            dim = in_channels
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                dim //= 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim //= 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise ValueError(f"scale factor {scale} is not one of 4, 2, 1, 0.5")
            layers += [nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.extra_level:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

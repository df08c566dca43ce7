"""OpenAI CLIP's ModifiedResNet (RN50, RN101, RN50x64) with timm's interface.

open_clip builds the network from its own config files (no download), with the same parameter
names as OpenAI's checkpoints. The attention pool is part of the backbone, as in CLIP: the pooled
embedding (1024-d for RN50, 512-d for RN101) is what forward_head returns with pre_logits=True.
The pool's position table is sized for the pretraining resolution; at another input size it is
interpolated on the fly, so any resolution works without changing the parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def clip_resnet_config(name: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(name)
    vision_cfg = (cfg or {}).get("vision_cfg") or {}
    if not isinstance(vision_cfg.get("layers"), (list, tuple)):
        raise ValueError(f"open_clip has no ModifiedResNet config named {name!r} (e.g. RN50, RN101, RN50x64)")
    vision = cfg["vision_cfg"]
    width = int(vision.get("width", 64))
    return {"layers": tuple(vision["layers"]), "width": width, "image_size": int(vision["image_size"]),
            "output_dim": int(cfg["embed_dim"]), "heads": width * 32 // 64}


def block_drop_path_rates(layers: tuple[int, ...] | list[int], drop_path_rate: float) -> list[list[float]]:
    """Stochastic depth per block as BoB's CLIP ResNet has it (hsouri/bob-classification@19a93cd
    models/resnet_clip.py, ModifiedResNet._make_layer): the first block of each stage has none; block j
    (j ≥ 1, counted within its stage) drops its residual branch with drop_path_rate × j / (blocks − 1),
    blocks being the whole network's count. Not timm's linear ramp over the network: the index restarts
    at every stage."""
    total = sum(layers)
    return [[0.0] + [drop_path_rate * j / max(total - 1, 1) for j in range(1, n)] for n in layers]


def _drop_path_forward(self, x: torch.Tensor) -> torch.Tensor:
    """open_clip's Bottleneck.forward with the residual branch dropped per sample before the sum."""
    out = self.act1(self.bn1(self.conv1(x)))
    out = self.act2(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(self.avgpool(out)))
    identity = x if self.downsample is None else self.downsample(x)
    return self.act3(self.drop_path(out) + identity)


def _add_drop_path(model: nn.Module, layers, drop_path_rate: float) -> None:
    """Give the blocks their DropPath (no parameters, so the state dict and checkpoint names are unchanged)."""
    from open_clip.modified_resnet import Bottleneck
    from timm.layers import DropPath

    with_drop_path = type("DropPathBottleneck", (Bottleneck,), {"forward": _drop_path_forward})
    for stage, rates in enumerate(block_drop_path_rates(layers, drop_path_rate)):
        for block, rate in zip(getattr(model, f"layer{stage + 1}"), rates):
            if rate > 0.0:
                block.drop_path = DropPath(rate)
                block.__class__ = with_drop_path


def _clip_resnet_class():
    from open_clip.modified_resnet import ModifiedResNet

    class ClipResNet(ModifiedResNet):
        """ModifiedResNet + forward_features / forward_head / reset_classifier / forward_intermediates."""

        def __init__(self, layers, output_dim, heads, image_size=224, width=64, num_classes=0,
                     drop_path_rate: float = 0.0):
            super().__init__(layers=list(layers), output_dim=output_dim, heads=heads, image_size=image_size,
                             width=width)
            if drop_path_rate > 0.0:
                _add_drop_path(self, layers, drop_path_rate)
            self.num_features = output_dim
            self.head_hidden_size = output_dim
            self.num_classes = num_classes
            self.head = nn.Linear(output_dim, num_classes) if num_classes > 0 else nn.Identity()
            self.feature_info = [
                {"num_chs": width * 4 * 2 ** i, "reduction": 4 * 2 ** i, "module": f"layer{i + 1}"}
                for i in range(4)
            ]

        def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
            self.num_classes = num_classes
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                x = layer(x)
            return x

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            x = attention_pool(self.attnpool, x)
            return x if pre_logits else self.head(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.forward_head(self.forward_features(x))

        def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
            """Drop the stages after the last one kept, and the attention pool (features only)."""
            keep = max(i % 4 for i in ([indices] if isinstance(indices, int) else indices))
            for i in range(keep + 1, 4):
                setattr(self, f"layer{i + 1}", nn.Identity())
            if prune_head:
                self.attnpool = nn.Identity()
                self.reset_classifier(0)
            return list(range(keep + 1))

        def forward_intermediates(self, x, indices=None, intermediates_only=False, **_):
            wanted = set(range(4)) if indices is None else {i % 4 for i in (
                [indices] if isinstance(indices, int) else indices)}
            feats = []
            x = self.stem(x)
            for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
                x = layer(x)
                if i in wanted:
                    feats.append(x)
            return feats if intermediates_only else (x, feats)

    return ClipResNet


def build_clip_resnet(name: str, num_classes: int = 0, drop_path_rate: float = 0.0, **overrides) -> nn.Module:
    """open_clip's config for `name`, with `overrides` (layers, width, heads, output_dim, image_size) and
    BoB's per-block stochastic depth (block_drop_path_rates)."""
    cfg = clip_resnet_config(name)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown ModifiedResNet options {sorted(unknown)}; known: {', '.join(sorted(cfg))}")
    return _clip_resnet_class()(num_classes=num_classes, drop_path_rate=drop_path_rate, **{**cfg, **overrides})


def attention_pool(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pooling (query: the mean token), with the position table resized to x."""
    n, c, h, w = x.shape
    tokens = x.flatten(2).permute(2, 0, 1)  # (HW, N, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    pos = pool.positional_embedding
    side = int(round((pos.shape[0] - 1) ** 0.5))
    if (h, w) != (side, side):
        grid = pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False).to(pos.dtype)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, c)], dim=0)
    tokens = tokens + pos[:, None, :].to(tokens.dtype)
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=pool.training, need_weights=False)
    return out[0]

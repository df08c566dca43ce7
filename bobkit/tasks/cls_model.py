"""The classifier a classification run trains: a zoo backbone (pooled features) plus a fresh head.

One structure for every backbone, timm-built or converted: `Classifier(backbone, head)`, where
the backbone returns pooled features and the head is a linear layer (fine-tuning; re-initialised
as the authors' reset_classifier does) or BatchNorm1d(affine=False) + linear (MAE-style linear
probe). checkpoints/final.pt holds its state_dict; `load_classifier` rebuilds it for evaluators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class Classifier(nn.Module):
    """backbone(x) -> pooled features -> head -> logits. A frozen backbone stays in eval mode."""

    def __init__(self, backbone: nn.Module, head: nn.Module, *, frozen_backbone: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make_head(num_features: int, num_classes: int, *, batchnorm: bool, init: str, drop: float = 0.0) -> nn.Module:
    """Linear head (dropout before it, as timm's drop_rate), optionally after BatchNorm1d(affine=False)."""
    linear = nn.Linear(num_features, num_classes)
    if init == "trunc_normal_0.01":
        nn.init.trunc_normal_(linear.weight, std=0.01)
    else:  # xavier_normal: the authors' reset_classifier
        nn.init.xavier_normal_(linear.weight)
    nn.init.zeros_(linear.bias)
    layers: list[nn.Module] = []
    if batchnorm:
        layers.append(nn.BatchNorm1d(num_features, affine=False, eps=1e-6))
    if drop > 0:
        layers.append(nn.Dropout(drop))
    return nn.Sequential(*layers, linear) if layers else linear


def head_kind(hparams: dict[str, Any]) -> str:
    return "bn_linear" if hparams.get("head_batchnorm") else "linear"


def build_backbone(backbone_spec: dict[str, Any], hparams: dict[str, Any], *, pretrained: bool):
    """The zoo's feature extractor with the recipe's regularisation and resolution."""
    from bobkit.backbones import build

    return build(backbone_spec, pretrained=pretrained, drop_path_rate=float(hparams.get("drop_path", 0.0)),
                 img_size=hparams.get("resolution"))


def build_classifier(spec, num_classes: int) -> tuple[Classifier, Any]:
    """Backbone (pretrained unless a smoke run or the recipe says otherwise) + the recipe's head."""
    hp = spec.hparams
    built = build_backbone(spec.backbone_spec, hp, pretrained=bool(hp.get("pretrained", True)) and not spec.smoke)
    head = make_head(built.num_features, num_classes, batchnorm=bool(hp.get("head_batchnorm")),
                     init=hp.get("head_init", "xavier_normal"), drop=float(hp.get("drop", 0.0)))
    model = Classifier(built.model, head, frozen_backbone=hp.get("trainable", "all") == "head")
    return model, built


def backbone_crop_pct(built) -> float | None:
    cfg = getattr(built.model, "pretrained_cfg", None) or {}
    return cfg.get("crop_pct")


def trainable_param_groups(model: Classifier, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """Optimizer groups: timm's layer-wise decay over the backbone, the head at full lr.

    Layer ids are computed on the backbone alone (its group_matcher, or timm's fallback), which
    gives the same scales as on the timm model with its head; the head takes scale 1.
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    groups: list[dict] = []
    backbone = model.backbone
    if any(p.requires_grad for p in backbone.parameters()):
        skip = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
        if layer_decay is not None and layer_decay < 1.0:
            groups += param_groups_layer_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=skip,
                                               layer_decay=layer_decay)
        else:
            groups += param_groups_weight_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=skip)
    for g in param_groups_weight_decay(model.head, weight_decay=weight_decay):
        groups.append({**g, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def load_classifier(final_pt: Path | str | dict[str, Any], backbone_spec: dict[str, Any],
                    map_location: str | torch.device = "cpu",
                    resolution: int | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the classifier of a finished run from its checkpoints/final.pt (strict load), given
    as a path or as the file's contents when the caller has read it already.

    The backbone is built at the run's resolution (ViT position tables depend on it) unless
    `resolution` says otherwise; no pretrained weights are fetched (final.pt holds them all).
    """
    from bobkit.tasks.cls_checkpoint import load

    ckpt = final_pt if isinstance(final_pt, dict) else load(Path(final_pt))
    res = resolution or ckpt.get("resolution")
    built = build_backbone(backbone_spec, {"drop_path": 0.0, "resolution": res}, pretrained=False)
    head = make_head(built.num_features, int(ckpt["num_classes"]), batchnorm=ckpt.get("head") == "bn_linear",
                     init="xavier_normal", drop=float(ckpt.get("drop") or 0.0))
    model = Classifier(built.model, head)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(map_location).eval(), ckpt

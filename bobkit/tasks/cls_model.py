"""The classifier a classification run trains: a zoo backbone (pooled features) plus a fresh head.

One structure for every backbone, timm-built or converted: `Classifier(backbone, head)`, where
the backbone returns pooled features and the head is a linear layer (fine-tuning; re-initialised
as the authors' reset_classifier does) or BatchNorm1d(affine=False) + linear (MAE-style linear
probe). checkpoints/final.pt holds its state_dict; `load_classifier` rebuilds it for evaluators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from bobkit.manifest.hparams import ClassificationHparams

BACKBONE_PREFIX = "backbone."
# A parameter name that no backbone's group_matcher matches (timm's matchers anchor their regexes at
# the start of a name): where the head goes when the classifier is grouped as timm groups its models.
_UNMATCHED = "\x00head"


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

    def group_matcher(self, coarse: bool = False):
        """timm's layer grouping of the whole classifier, as timm groups one of its models with its head:
        "backbone.<name>" takes the group the backbone's own group_matcher gives <name>, and the head is
        left unmatched, so it joins the backbone's unmatched parameters in the last (highest) group.

        Returns a matcher callable for timm.models.group_with_matcher (and so for
        timm.optim.param_groups_layer_decay). AttributeError when the backbone has no group_matcher.
        """
        from timm.models._manipulate import group_with_matcher  # public in its module, not re-exported

        inner = self.backbone.group_matcher(coarse=coarse)
        named = [(n, None) for n, _ in self.backbone.named_parameters()] + [(_UNMATCHED, None)]
        layer_of = group_with_matcher(named, inner, reverse=True)  # unmatched names sort last in timm
        top = layer_of[_UNMATCHED]

        def ordinal(name: str) -> tuple[int]:
            if name.startswith(BACKBONE_PREFIX):
                return (layer_of.get(name[len(BACKBONE_PREFIX):], top),)
            return (top,)

        return ordinal

    def no_weight_decay(self) -> set[str]:
        """The backbone's own no-weight-decay names (timm's no_weight_decay), under "backbone."."""
        inner = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        return {BACKBONE_PREFIX + n for n in inner}


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


def head_kind(hp: ClassificationHparams) -> str:
    """final.pt's `head` of a run with these ClassificationHparams."""
    return "bn_linear" if hp.head_batchnorm else "linear"


def build_backbone(backbone_spec: dict[str, Any], *, pretrained: bool, drop_path: float = 0.0,
                   resolution: int | None = None):
    """The zoo's feature extractor with the recipe's regularisation and resolution (None: the backbone's)."""
    from bobkit.backbones import build

    return build(backbone_spec, pretrained=pretrained, drop_path_rate=drop_path, img_size=resolution)


def build_classifier(spec, num_classes: int, hp: ClassificationHparams | None = None) -> tuple[Classifier, Any]:
    """Backbone (pretrained unless a smoke run or the recipe says otherwise) + the recipe's head.
    `hp`: the spec's ClassificationHparams (spec.typed_hparams() when not given)."""
    if hp is None:
        hp = spec.typed_hparams()
    built = build_backbone(spec.backbone_spec, pretrained=hp.pretrained and not spec.smoke, drop_path=hp.drop_path,
                           resolution=hp.resolution)
    head = make_head(built.num_features, num_classes, batchnorm=hp.head_batchnorm, init=hp.head_init, drop=hp.drop)
    model = Classifier(built.model, head, frozen_backbone=hp.trainable == "head")
    if hp.fixed_pos_embed:
        fix_pos_embed(built.model)
    return model, built


def fix_pos_embed(backbone: nn.Module) -> None:
    """Keep the position embedding out of training (MoCo v3 trains with a fixed sin-cos table)."""
    from bobkit.errors import BadInput

    table = getattr(backbone, "pos_embed", None)
    if not isinstance(table, nn.Parameter):
        raise BadInput(f"hparams.fixed_pos_embed: {type(backbone).__name__} has no pos_embed parameter; "
                       "the setting applies to ViT backbones")
    table.requires_grad_(False)


def backbone_crop_pct(built) -> float | None:
    cfg = getattr(built.model, "pretrained_cfg", None) or {}
    return cfg.get("crop_pct")


def trainable_param_groups(model: Classifier, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """Optimizer groups of the trainable parameters, with timm's weight-decay rule (none for 1-d
    parameters and the backbone's no_weight_decay names) and, with `layer_decay` < 1, timm's
    layer-wise lr scales.

    Layer decay over a backbone with a group_matcher is timm's param_groups_layer_decay on the whole
    classifier (Classifier.group_matcher): the scales equal those of timm's create_optimizer_v2 on
    the timm model with its head, as the authors ran it (the head in the top group, scale 1). A
    backbone without a group_matcher is grouped alone by timm's fallback and the head takes scale 1.
    Without layer decay the head's groups carry lr_scale 1 and the backbone's none (the same lr).
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    backbone = model.backbone
    backbone_trains = any(p.requires_grad for p in backbone.parameters())
    layered = layer_decay is not None and layer_decay < 1.0 and backbone_trains
    if layered and hasattr(backbone, "group_matcher"):
        groups = param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=model.no_weight_decay(),
                                          layer_decay=layer_decay)
        return [g for g in groups if g["params"]]
    groups = []
    if backbone_trains:
        skip = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
        if layered:
            groups += param_groups_layer_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=skip,
                                               layer_decay=layer_decay)
        else:
            groups += param_groups_weight_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=skip)
    for g in param_groups_weight_decay(model.head, weight_decay=weight_decay):
        groups.append({**g, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


MODULE_PATTERNS = 4  # module-name patterns per group in describe_param_groups


def describe_param_groups(model: nn.Module, groups: Sequence[Mapping[str, Any]], *, lr: float | None = None,
                          max_patterns: int = MODULE_PATTERNS) -> list[dict[str, Any]]:
    """A JSON-serialisable summary of optimizer param groups, one entry per group in their order:

    {"params": tensors, "numel": scalars, "lr_scale": the group's (1.0 when it has none), "lr": the
    group's initial lr: lr × lr_scale when `lr` (the optimizer's base lr) is given, else the group's
    own "lr" as it stands (None when it has none), "weight_decay", "modules": at most `max_patterns`
    name patterns covering its parameters ("backbone.blocks.3.*"), then "… N more" when they do not fit}.

    `groups`: trainable_param_groups' dicts, or an optimizer's param_groups (give `lr` for those: a
    timm scheduler has already moved their "lr" to the warm-up start).

    Pure: names come from model.named_parameters(); nothing is modified. ValueError when a group holds
    a parameter that is not the model's.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    out: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        params = list(group["params"])
        unnamed = sum(id(p) not in names for p in params)
        if unnamed:
            raise ValueError(f"param group {i}: {unnamed} parameter(s) are not parameters of the model")
        scale = float(group.get("lr_scale", 1.0))
        wd = group.get("weight_decay")
        out.append({
            "params": len(params), "numel": int(sum(p.numel() for p in params)), "lr_scale": scale,
            "lr": float(lr) * scale if lr is not None else (None if group.get("lr") is None else float(group["lr"])),
            "weight_decay": None if wd is None else float(wd),
            "modules": name_patterns([names[id(p)] for p in params], max_patterns),
        })
    return out


def name_patterns(names: Iterable[str], limit: int = MODULE_PATTERNS) -> list[str]:
    """Patterns covering dotted parameter names, in first-seen order: the names themselves when at most
    `limit`, else their prefixes cut at the deepest level that leaves at most `limit` of them
    ("backbone.blocks.3.*"); past that, the first `limit` and "… N more"."""
    parts = [n.split(".") for n in names]
    if not parts:
        return []
    depth = max(len(p) for p in parts)
    while True:
        patterns = list(dict.fromkeys(".".join(p[:depth]) + (".*" if len(p) > depth else "") for p in parts))
        if len(patterns) <= limit or depth == 1:
            break
        depth -= 1
    if len(patterns) > limit:
        patterns = patterns[:limit] + [f"… {len(patterns) - limit} more"]
    return patterns


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
    built = build_backbone(backbone_spec, pretrained=False, resolution=res)
    head = make_head(built.num_features, int(ckpt["num_classes"]), batchnorm=ckpt.get("head") == "bn_linear",
                     init="xavier_normal", drop=float(ckpt.get("drop") or 0.0))
    model = Classifier(built.model, head)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(map_location).eval(), ckpt

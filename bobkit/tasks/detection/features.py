"""The backbone as a detector sees it: which feature maps, how many channels, at which strides.

Engine-independent (torch only): the mmdet adapter and the config generator both use it, so the
neck's input channels in the generated config are exactly what the adapter's forward returns.
A plain ViT hands over its last block's map (one scale, a simple feature pyramid follows); a
hierarchical backbone hands over its maps at stride 4 and coarser (an FPN follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureLayout:
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    single_scale: bool  # plain ViT: one map, followed by a simple feature pyramid
    indices: tuple[int, ...]  # which of the backbone's outputs these are

    @property
    def default_neck(self) -> str:
        return "simple_fpn" if self.single_scale else "fpn"


def build_kwargs(backbone_spec: dict[str, Any], *, resolution: int, drop_path: float) -> dict[str, Any]:
    """Detection-time arguments for the zoo: feature maps only, the detection resolution (for the
    families whose size is built in), drop path, and the checkpoint the detection configs use."""
    return {"features_only": True, "img_size": resolution, "drop_path_rate": drop_path, "weights_for": "detection"}


def accept_any_input_size(model: Any) -> None:
    """timm's SwinV2 is built for one input size; detection's multi-scale resizing feeds many.
    Padding each window and building the shift mask per input (timm's own options) lifts that."""
    for module in model.modules():
        if hasattr(module, "strict_img_size"):
            module.strict_img_size = False
        if hasattr(module, "dynamic_mask") and hasattr(module, "get_attn_mask"):
            module.dynamic_mask = True


def layout_of(built: Any) -> FeatureLayout:
    """The maps the detector uses, from a BuiltBackbone built with features_only=True (NCHW maps)."""
    dims, strides = list(built.feature_dims), list(built.strides)
    if not dims or len(dims) != len(strides):
        raise ValueError(f"backbone '{built.backbone_id}' gives no per-level feature_dims/strides "
                         f"({dims} / {strides})")
    if built.plain_vit or len(set(strides)) == 1:
        last = len(dims) - 1
        return FeatureLayout((dims[last],), (strides[last],), True, (last,))
    keep = tuple(i for i, s in enumerate(strides) if s >= 4)
    return FeatureLayout(tuple(dims[i] for i in keep), tuple(strides[i] for i in keep), False, keep)


def build_features(backbone_spec: dict[str, Any], *, pretrained: bool, resolution: int, drop_path: float):
    """(BuiltBackbone, FeatureLayout) through the backbone zoo, the only way bobkit builds a backbone."""
    from bobkit.backbones import build

    built = build(backbone_spec, pretrained=pretrained,
                  **build_kwargs(backbone_spec, resolution=resolution, drop_path=drop_path))
    if backbone_spec.get("family") == "swinv2":
        accept_any_input_size(built.model)
    return built, layout_of(built)


def probe_layout(backbone_spec: dict[str, Any], *, resolution: int, drop_path: float) -> FeatureLayout:
    """The layout without spending memory or downloads: built on the meta device, random init."""
    import torch

    try:
        with torch.device("meta"):
            _, layout = build_features(backbone_spec, pretrained=False, resolution=resolution, drop_path=drop_path)
    except (NotImplementedError, RuntimeError):
        _, layout = build_features(backbone_spec, pretrained=False, resolution=resolution, drop_path=drop_path)
    return layout

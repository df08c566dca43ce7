"""ConvNeXt checkpoints in the official layout (facebookresearch/ConvNeXt, and VICRegL's copy of it)
→ timm's ConvNeXt names.

official                                  timm
downsample_layers.0.{0,1}               → stem.{0,1}
downsample_layers.i.{0,1} (i = 1..3)    → stages.i.downsample.{0,1}
stages.i.j.dwconv / norm / pwconv1 / pwconv2 / gamma
                                        → stages.i.blocks.j.conv_dw / norm / mlp.fc1 / mlp.fc2 / gamma
norm                                    → head.norm
head                                    → dropped (ImageNet classifier)
"""

from __future__ import annotations

import re

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import ConvertContext, Converted, KeyMapper, drop_classifier, tensors_of

_BLOCK_PARTS = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}


def _official_to_timm(key: str) -> str | None:
    m = re.fullmatch(r"downsample_layers\.(\d)\.([01])\.(weight|bias)", key)
    if m:
        stage, part, leaf = m.groups()
        return f"stem.{part}.{leaf}" if stage == "0" else f"stages.{stage}.downsample.{part}.{leaf}"
    m = re.fullmatch(r"stages\.(\d)\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m and m.group(3) in _BLOCK_PARTS:
        stage, block, part, leaf = m.groups()
        return f"stages.{stage}.blocks.{block}.{_BLOCK_PARTS[part]}.{leaf}"
    m = re.fullmatch(r"stages\.(\d)\.(\d+)\.gamma", key)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}.gamma"
    m = re.fullmatch(r"norm\.(weight|bias)", key)
    if m:
        return f"head.norm.{m.group(1)}"
    return None


def _map_official(ctx: ConvertContext, fmt: str) -> KeyMapper:
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where, wrappers=("model", "state_dict")), where, fmt)
    drop_classifier(km, ["head"], "ImageNet classifier of the checkpoint")
    km.rename(_official_to_timm)
    return km


@converter("convnext_official")
def convert_convnext_official(ctx: ConvertContext) -> Converted:
    """`convnext_{tiny,base}_{1k,22k}_224.pth`: {'model': official names}."""
    return _map_official(ctx, "convnext_official").result()


@converter("vicregl")
def convert_vicregl(ctx: ConvertContext) -> Converted:
    """VICRegL's ConvNeXt (`convnext_xlarge_alpha0.75.pth`): the official layout without layer scale
    (VICRegL builds it with layer_scale_init_value=0, so no `gamma`) and without a classifier.
    timm's block always has `gamma`; it is set to 1, which multiplies by one and so reproduces
    the checkpoint exactly. VICRegL normalises tokens before pooling while timm's head.norm
    normalises the pooled vector; the parameters are the same LayerNorm."""
    import torch

    km = _map_official(ctx, "vicregl")
    out = km.result()
    expected = ctx.model.state_dict()
    filled = 0
    for key, value in expected.items():
        if key.endswith(".gamma") and key not in out.state:
            out.state[key] = torch.ones_like(value)
            filled += 1
    if filled:
        out.notes.append(f"layer scale gamma set to 1 in {filled} blocks (VICRegL has none)")
    return out

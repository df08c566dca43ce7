"""Swin Transformer V2 checkpoints in the original layout (microsoft/Swin-Transformer releases, and
the timm-0.6-era SwinV2 inside MiDaS v3.1's DPT) → timm 1.0's SwinV2 names.

The original layout puts each stage's patch merging at the end of stage i (`layers.i.downsample`,
i = 0..2); timm 1.0 puts it at the start of stage i+1. Buffers derived from the window size
(`relative_coords_table`, `relative_position_index`, `attn_mask`) are recomputed by the module
for the window it is built with, so they are dropped by name. Files already in timm 1.0's layout
(`head.fc.*`, merging at the start of stages) pass through unchanged. The ImageNet head (`head.*`
in timm 0.6, `head.fc.*` in timm 1.0) is not part of the backbone but is kept aside: retrieval's
`head_logits` feature of the MiDaS encoders is that head's output.
"""

from __future__ import annotations

import re

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import ConvertContext, Converted, KeyMapper, drop_classifier, tensors_of

_DERIVED = (".relative_coords_table", ".relative_position_index", ".attn_mask")


def _map_swinv2(km: KeyMapper, prefix: str = "") -> None:
    keys = [k for k in km.remaining if k.startswith(prefix)]
    km.drop(lambda k: k.startswith(prefix) and k.endswith(_DERIVED),
            "window-size buffers (recomputed for the built window)")
    # timm 0.6 names the head a plain Linear `head`, timm 1.0 `head.fc`
    drop_classifier(km, [prefix + "head", prefix + "head.fc"], "ImageNet classifier of the checkpoint")
    original = any(k.startswith(prefix + "layers.0.downsample.") for k in keys)

    def rule(key: str) -> str | None:
        if not key.startswith(prefix):
            return None
        rest = key[len(prefix):]
        if original:
            m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", rest)
            if m:
                return f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        return rest

    km.rename(rule)


@converter("swinv2_official")
def convert_swinv2_official(ctx: ConvertContext) -> Converted:
    """`swinv2_*_patch4_window*.pth`: {'model': original names}."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where, wrappers=("model", "state_dict")), where, "swinv2_official")
    _map_swinv2(km)
    return km.result()


@converter("midas")
def convert_midas(ctx: ConvertContext) -> Converted:
    """MiDaS v3.1 `dpt_swin2_*.pt`: the whole DPT depth network. Its encoder is the timm SwinV2
    under `pretrained.model.`; the DPT reassembly (`pretrained.act_postprocess*`) and decoder
    (`scratch.*`) are dropped by name."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where, wrappers=("model", "state_dict")), where, "midas")
    km.drop("scratch.", "DPT depth decoder")
    km.drop("pretrained.act_postprocess", "DPT reassembly layers (decoder side)")
    _map_swinv2(km, prefix="pretrained.model.")
    return km.result()

"""CLIP checkpoints: OpenAI's ResNets (TorchScript archives, `visual.*` in open_clip's ModifiedResNet
names) and OpenCLIP ViTs (`open_clip_pytorch_model.bin`) → timm's ViT names.

Both hold the text tower too; it is dropped by name. For ViTs the image-to-joint-space projection
`visual.proj` is dropped as well: BoB uses the ViT's class token, not the projected embedding.
"""

from __future__ import annotations

import re

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import (
    ConvertContext,
    Converted,
    KeyMapper,
    read_torchscript_or_state,
    tensors_of,
)

_TEXT_TOWER = ("transformer.", "token_embedding.", "ln_final.")
_TEXT_EXACT = ("positional_embedding", "text_projection", "logit_scale", "logit_bias", "attn_mask")
_METADATA = ("input_resolution", "context_length", "vocab_size")


def _drop_text_tower(km: KeyMapper) -> None:
    for prefix in _TEXT_TOWER:
        km.drop(prefix, "CLIP text tower")
    for key in _TEXT_EXACT:
        km.drop(key, "CLIP text tower", prefix=False)
    for key in _METADATA:
        km.drop(key, "CLIP model metadata (not a weight)", prefix=False)


@converter("openai_clip")
def convert_openai_clip(ctx: ConvertContext) -> Converted:
    """OpenAI `RN50.pt` etc.: a TorchScript archive of the full CLIP model (a plain state dict is
    accepted too). The visual tower's names equal open_clip's ModifiedResNet, attention pool included."""
    where = str(ctx.path)
    state = tensors_of(read_torchscript_or_state(ctx.path), where)
    km = KeyMapper(state, where, "openai_clip")
    _drop_text_tower(km)
    km.take_prefix("visual.")
    return km.result()


def _open_clip_vit_rule(key: str) -> str | None:
    if not key.startswith("visual."):
        return None
    rest = key[len("visual."):]
    simple = {
        "class_embedding": "cls_token",
        "positional_embedding": "pos_embed",
        "conv1.weight": "patch_embed.proj.weight",
        "ln_pre.weight": "norm_pre.weight",
        "ln_pre.bias": "norm_pre.bias",
        "ln_post.weight": "norm.weight",
        "ln_post.bias": "norm.bias",
    }
    if rest in simple:
        return simple[rest]
    m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", rest)
    if not m:
        return None
    block, part = m.groups()
    parts = {
        "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
        "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
        "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
        "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
        "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
        "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
    }
    return f"blocks.{block}.{parts[part]}" if part in parts else None


def _reshape_for_timm(key: str, value):
    if key == "cls_token":
        return value.reshape(1, 1, -1)
    if key == "pos_embed":
        return value.unsqueeze(0)
    return value


@converter("open_clip")
def convert_open_clip(ctx: ConvertContext) -> Converted:
    """OpenCLIP ViT checkpoints (laion/CLIP-ViT-*): `visual.*` in open_clip's VisionTransformer names."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "open_clip")
    _drop_text_tower(km)
    km.drop("visual.proj", "CLIP image projection to the joint space (BoB uses the class token)", prefix=False)
    for key in list(km.remaining):
        new = _open_clip_vit_rule(key)
        if new is not None:
            km.move(key, new, lambda v, n=new: _reshape_for_timm(n, v))
    return km.result()

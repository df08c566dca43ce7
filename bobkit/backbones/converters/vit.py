"""Self-supervised and DeiT checkpoints whose backbone keys already follow timm's ViT/ResNet names
(DINO, MAE, MoCo v3, DeiT), and SAM's image encoder. What differs is the wrapper around the state
dict and the pretraining-only parts each converter drops by name."""

from __future__ import annotations

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import (
    ConvertContext,
    Converted,
    KeyMapper,
    drop_classifier,
    tensors_of,
)


@converter("dino")
def convert_dino(ctx: ConvertContext) -> Converted:
    """`dino_*_pretrain.pth`: the bare teacher backbone (head replaced by Identity in DINO's code).
    A full DINO training checkpoint (`teacher`/`student`) gives its teacher, DINO head dropped."""
    where = str(ctx.path)
    raw = ctx.load()
    if isinstance(raw, dict) and "teacher" in raw:
        km = KeyMapper(raw["teacher"], where, "dino")
        km.drop("module.head.", "DINO projection head (pretraining only)")
        km.drop("head.", "DINO projection head (pretraining only)")
        for prefix in ("module.backbone.", "backbone."):
            km.take_prefix(prefix)
        return km.result()
    km = KeyMapper(tensors_of(raw, where), where, "dino")
    drop_classifier(km, ["fc", "head"], "classifier (DINO releases none; an empty Identity head at most)")
    km.take_prefix("")
    return km.result()


@converter("mae")
def convert_mae(ctx: ConvertContext) -> Converted:
    """`mae_pretrain_vit_*.pth`: {'model': encoder}. Files with the decoder keep it under
    `decoder_*` and `mask_token`, which are dropped by name."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "mae")
    km.drop("decoder_", "MAE decoder (pretraining only)")
    km.drop("mask_token", "MAE mask token (pretraining only)", prefix=False)
    km.take_prefix("")
    return km.result()


@converter("moco_v3")
def convert_moco_v3(ctx: ConvertContext) -> Converted:
    """`*.pth.tar`: {'state_dict': {'module.base_encoder.*', 'module.momentum_encoder.*',
    'module.predictor.*'}}. The base encoder is kept; its projection MLP (`head` on ViTs, `fc` on
    ResNets), the momentum encoder and the predictor are pretraining-only and dropped."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "moco_v3")
    for root in ("module.", ""):
        km.drop(root + "momentum_encoder.", "MoCo v3 momentum encoder (pretraining only)")
        km.drop(root + "predictor.", "MoCo v3 predictor (pretraining only)")
        head = "head." if ctx.family == "vit" else "fc."
        km.drop(root + "base_encoder." + head, "MoCo v3 projection MLP (pretraining only)")
        km.take_prefix(root + "base_encoder.")
    return km.result()


@converter("deit")
def convert_deit(ctx: ConvertContext) -> Converted:
    """DeiT's `deit_*.pth`: {'model': timm-named ViT with its ImageNet classifier}."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "deit")
    drop_classifier(km, ["head"], "DeiT's ImageNet classifier")
    km.take_prefix("")
    return km.result()


_SAM_MLP = {".mlp.lin1.": ".mlp.fc1.", ".mlp.lin2.": ".mlp.fc2."}


@converter("sam")
def convert_sam(ctx: ConvertContext) -> Converted:
    """`sam_vit_*.pth`: the image encoder under `image_encoder.` (timm's samvit names, except the
    MLP's lin1/lin2); the prompt encoder and mask decoder are dropped."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "sam")
    km.drop("prompt_encoder.", "SAM prompt encoder (segmentation decoder side)")
    km.drop("mask_decoder.", "SAM mask decoder (segmentation decoder side)")
    km.drop("pixel_mean", "SAM input normalisation constant (bobkit takes it from the manifest)", prefix=False)
    km.drop("pixel_std", "SAM input normalisation constant (bobkit takes it from the manifest)", prefix=False)

    def rule(key: str) -> str | None:
        if not key.startswith("image_encoder."):
            return None
        new = key[len("image_encoder."):]
        for old, repl in _SAM_MLP.items():
            new = new.replace(old, repl)
        return new

    km.rename(rule)
    return km.result()

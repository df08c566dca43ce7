"""ResNet checkpoints in torchvision's naming (torchvision, VICReg); timm's ResNet uses the same names."""

from __future__ import annotations

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import ConvertContext, Converted, KeyMapper, drop_classifier, tensors_of


@converter("torchvision")
def convert_torchvision(ctx: ConvertContext) -> Converted:
    """torchvision's ImageNet ResNets (`torchvision://resnet50` in mmdet configs)."""
    where = str(ctx.path)
    km = KeyMapper(tensors_of(ctx.load(), where), where, "torchvision")
    drop_classifier(km, ["fc"], "torchvision's ImageNet classifier")
    km.take_prefix("")
    return km.result()


@converter("vicreg")
def convert_vicreg(ctx: ConvertContext) -> Converted:
    """VICReg's released `resnet50.pth` is the bare backbone (torchvision names, no fc; its extra
    zero-padding layer has no parameters). A full training checkpoint (`model` with `backbone.` and
    `projector.`) is accepted too: the projector is dropped by name."""
    where = str(ctx.path)
    state = tensors_of(ctx.load(), where)
    km = KeyMapper(state, where, "vicreg")
    if any(k.startswith(("backbone.", "module.backbone.")) for k in state):
        km.drop("module.projector.", "VICReg projector (pretraining only)")
        km.drop("projector.", "VICReg projector (pretraining only)")
        km.take_prefix("module.backbone.")
        km.take_prefix("backbone.")
    else:
        km.take_prefix("")
    return km.result()

"""SSCD copy-detection descriptors ship as TorchScript archives (`sscd_*.torchscript.pt`); bobkit
uses the scripted module itself (SSCD's trunk + GeM pooling + projection + L2 norm) rather than
re-mapping its keys, and checks that it yields the descriptor size bobkit expects."""

from __future__ import annotations

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import CheckpointMismatch, ConvertContext, Converted


@converter("sscd_torchscript")
def load_sscd_torchscript(ctx: ConvertContext) -> Converted:
    import torch

    where = str(ctx.path)
    try:
        module = torch.jit.load(str(ctx.path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointMismatch(f"{where}: not a TorchScript archive ({str(exc).splitlines()[0]}); "
                                 "SSCD weights are the *.torchscript.pt files") from None
    module.eval()
    want = int(getattr(ctx.model, "num_features", 0))
    with torch.no_grad():
        out = module(torch.zeros(1, 3, 64, 64))
    if out.ndim != 2 or (want and out.shape[1] != want):
        raise CheckpointMismatch(f"{where}: the TorchScript descriptor has shape {tuple(out.shape)}, "
                                 f"expected (1, {want}); wrong file for this backbone")
    return Converted(module=module, notes=[f"TorchScript descriptor, {out.shape[1]}-d"])

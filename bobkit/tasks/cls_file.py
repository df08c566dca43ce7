"""An ImageNet classifier from a file the user names, for OOD evaluation without a bobkit fine-tune.

Two layouts are read:
- bobkit's own `checkpoints/final.pt` (a finished classification run, copied anywhere);
- a timm classifier state dict for the backbone's architecture: what timm's train.py writes (the
  authors fine-tuned with it), a hub file, or any `model.state_dict()`; optionally under
  `state_dict`/`model`/`module`, optionally with DDP's `module.` prefix. The classifier named by
  timm's config for the architecture (`head`, `fc`, `head.fc`) becomes the Classifier's head, the
  rest must fit the backbone exactly (the strict loader names what does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bobkit.errors import BadInput

def is_bobkit_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and "model" in obj and "num_classes" in obj and obj.get("head") in (
        "linear", "bn_linear")


def load_classifier_file(path: Path, backbone_spec: dict[str, Any], *, resolution: int | None,
                         map_location: Any = "cpu"):
    """(Classifier in eval mode, checkpoint facts) from `path`; BadInput when it is not a classifier of
    this backbone. `resolution`: what a timm state dict's backbone is built at (a bobkit final.pt
    knows its own)."""
    from bobkit.backbones.converters.common import read_checkpoint
    from bobkit.tasks.cls_model import load_classifier

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: classifier file not found; give the file of an ImageNet fine-tuned "
                       f"'{backbone_spec['id']}' (--classifier BACKBONE=FILE)")
    obj = read_checkpoint(path)
    if is_bobkit_checkpoint(obj):
        model, ckpt = load_classifier(obj, backbone_spec, map_location=map_location)
        return model, {**{k: v for k, v in ckpt.items() if k != "model"}, "layout": "bobkit final.pt"}
    return _load_timm_classifier(obj, path, backbone_spec, resolution, map_location)


def _load_timm_classifier(obj: Any, path: Path, backbone_spec: dict[str, Any], resolution: int | None,
                          map_location: Any):
    """Through the `checkpoint` converter (the gauntlet's): it unwraps the file, loads the backbone
    strictly and keeps the classifier aside, which becomes the head."""
    from torch import nn

    from bobkit.backbones.converters import ConvertContext, converter_for
    from bobkit.backbones.converters.user import classifier_names
    from bobkit.backbones.loading import load_strict
    from bobkit.backbones.zoo import TIMM_FAMILIES, as_backbone
    from bobkit.manifest.models import WeightsSource
    from bobkit.tasks.cls_model import Classifier, build_backbone

    where = str(path)
    entry = as_backbone(backbone_spec)
    if entry.family not in TIMM_FAMILIES or not entry.timm_model:
        raise BadInput(f"{where}: backbone '{entry.id}' is not a timm architecture, so only a bobkit "
                       "checkpoints/final.pt of its fine-tune can be evaluated")
    built = build_backbone(backbone_spec, pretrained=False, resolution=resolution)
    ctx = ConvertContext(path=path, model=built.model, backbone=entry,
                         source=WeightsSource(format="checkpoint", path=where), loaded=obj)
    converted = converter_for("checkpoint")(ctx)
    if not converted.classifier:
        wanted = " or ".join(n + ".weight" for n in classifier_names(entry.timm_model))
        raise BadInput(f"{where}: no classifier ({wanted}) in this file; OOD evaluation needs an ImageNet "
                       "fine-tuned classifier, not a backbone checkpoint")
    weight, bias = converted.classifier["weight"], converted.classifier["bias"]
    if weight.ndim != 2 or weight.shape[1] != built.num_features:
        raise BadInput(f"{where}: the classifier has shape {tuple(weight.shape)}; backbone "
                       f"'{entry.id}' gives {built.num_features} features")
    report = load_strict(built.model, converted, f"{where} (timm classifier → {entry.id})")
    head = nn.Linear(built.num_features, int(weight.shape[0]))
    head.weight.data.copy_(weight)
    head.bias.data.copy_(bias)
    model = Classifier(built.model, head).to(map_location).eval()
    facts = {"num_classes": int(weight.shape[0]), "classes": None, "backbone": entry.id,
             "resolution": resolution, "epoch": obj.get("epoch") if isinstance(obj, dict) else None,
             "layout": "timm state dict; its classifier is the evaluated head",
             "load_report": "backbone: " + report.summary()}
    return model, facts

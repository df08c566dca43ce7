"""timm's own checkpoints (hub `timm/<arch>.<tag>` files): already in timm's naming.

timm's per-architecture `checkpoint_filter_fn` is applied first, as timm itself does when it loads
pretrained weights (it upgrades older layouts and resizes position tables); the classifier that
the pretrained config names is dropped because the zoo builds the backbone without one.
"""

from __future__ import annotations

import sys

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import ConvertContext, Converted, KeyMapper, drop_classifier, tensors_of


@converter("timm")
def convert_timm(ctx: ConvertContext) -> Converted:
    import timm

    where = str(ctx.path)
    state = tensors_of(ctx.load(), where)
    name = ctx.source.timm_name or ctx.backbone.timm_model
    cfg = timm.models.get_pretrained_cfg(name)
    classifier = (cfg.classifier if cfg else None) or "head"
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
    filter_fn = getattr(sys.modules.get(type(ctx.model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, ctx.model)
    km = KeyMapper(state, where, "timm")
    model_keys = set(ctx.model.state_dict())
    drop_classifier(km, [c for c in classifiers if c + ".weight" not in model_keys],
                    f"classifier of {name} (the backbone is built without one)")
    km.take_prefix("")
    return km.result()

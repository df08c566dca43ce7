"""A user's own checkpoint for a timm architecture (format `checkpoint`, the gauntlet's plug-in):
a state dict, optionally under `state_dict`/`model`/`module`, optionally with DDP's `module.`
prefix. The classifier that timm's default config names for the architecture is dropped by name;
everything else must fit the architecture exactly."""

from __future__ import annotations

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import ConvertContext, Converted, KeyMapper, drop_classifier, tensors_of


@converter("checkpoint")
def convert_user_checkpoint(ctx: ConvertContext) -> Converted:
    where = str(ctx.path)
    state = tensors_of(ctx.load(), where, wrappers=("state_dict", "model", "module"))
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    km = KeyMapper(state, where, "checkpoint")
    model_keys = set(ctx.model.state_dict())
    drop_classifier(km, [n for n in classifier_names(ctx.backbone.timm_model) if n + ".weight" not in model_keys],
                    "classifier (the backbone is built without one)")
    km.take_prefix("")
    return km.result()


def classifier_names(timm_model: str | None) -> list[str]:
    """The module path(s) of the classifier in timm's config for an architecture (`head` when unknown)."""
    classifier = "head"
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(timm_model) if timm_model else None
        classifier = (cfg.classifier if cfg else None) or classifier
    except (ImportError, RuntimeError):
        pass
    return [classifier] if isinstance(classifier, str) else list(classifier)

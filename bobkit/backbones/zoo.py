"""Build any manifest backbone: construct the network, load its checkpoint, shape it for the task.

1. construct: timm by name for the resnet/convnext/swinv2/vit families (pretrained=False, with the
   manifest's timm_kwargs), open_clip's ModifiedResNet for clip_resnet, bobkit's SDEncoder for
   sd_unet, SSCD's descriptor for sscd_torchscript weights; always without a classifier.
2. load (pretrained=True): fetch and verify the file (bobkit.weights), convert it with the
   converter of its format (bobkit.backbones.converters) and load it strictly.
3. shape: a classifier (num_classes > 0, timm's reset_classifier; the checkpoint's own head where
   its converter kept one that fits, else the seeded random one) or a multi-scale feature
   extractor (features_only=True, for detection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from bobkit.backbones import BuiltBackbone
from bobkit.errors import BadInput

TIMM_FAMILIES = ("resnet", "convnext", "swinv2", "vit")
# timm architectures whose constructor takes img_size (the others are fully convolutional).
_SIZED_FAMILIES = ("swinv2", "vit")


def as_backbone(backbone: Any):
    """A manifest Backbone from a Backbone, its dict (RunSpec.backbone_spec) or an id/alias."""
    from pydantic import ValidationError

    from bobkit.manifest.models import Backbone

    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, dict):
        try:
            return Backbone.model_validate(backbone)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BadInput(f"backbone spec, field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    if isinstance(backbone, str):
        from bobkit.errors import unknown_id
        from bobkit.manifest.loader import load_catalog

        catalog = load_catalog()
        found = catalog.backbone_by_alias(backbone)
        if found is None:
            raise unknown_id("backbone", backbone, sorted(catalog.backbones))
        return found
    raise BadInput(f"expected a backbone id, manifest entry or dict, got {type(backbone).__name__}")


def construct(entry: Any, *, img_size: int | None = None, drop_path_rate: float = 0.0,
              device: str | None = None, pretrained: bool = False, model_kwargs: dict | None = None) -> Any:
    """The randomly initialised network of a manifest entry, without classifier head.
    device="meta" builds the same modules with shape-only tensors (parameter counts, no memory).
    `pretrained` matters only to user backbones (family custom), whose function loads its weights."""
    if entry.family == "custom":
        from bobkit.backbones.adapters.custom import build_user_backbone

        return build_user_backbone(entry, pretrained=pretrained, probe_size=img_size)
    import torch

    if device is None and torch.empty(0).device.type == "meta":  # called inside `with torch.device("meta")`
        device = "meta"
    if device is not None:
        with torch.device(device):
            return _construct(entry, img_size, drop_path_rate, device != "meta", model_kwargs or {})
    return _construct(entry, img_size, drop_path_rate, True, model_kwargs or {})


def _construct(entry: Any, img_size: int | None, drop_path_rate: float, materialise: bool,
               model_kwargs: dict) -> Any:
    if entry.weights.format == "sscd_torchscript":
        from bobkit.backbones.adapters.sscd import SSCDDescriptor

        return SSCDDescriptor(entry.timm_model, **_timm_extra(entry, None, drop_path_rate), **model_kwargs)
    if entry.family in TIMM_FAMILIES:
        import timm

        if not timm.is_model(entry.timm_model):
            raise BadInput(f"backbone '{entry.id}': timm {timm.__version__} has no model '{entry.timm_model}' "
                           "(timm_model in manifests/backbones.yaml)")
        size = img_size if entry.family in _SIZED_FAMILIES else None
        return timm.create_model(entry.timm_model, pretrained=False, num_classes=0,
                                 **{**_timm_extra(entry, size, drop_path_rate), **model_kwargs})
    if entry.family == "clip_resnet":
        from bobkit.backbones.adapters.clip_resnet import build_clip_resnet

        try:
            return build_clip_resnet(entry.timm_model, drop_path_rate=drop_path_rate, **entry.timm_kwargs)
        except ValueError as exc:
            raise BadInput(f"backbone '{entry.id}': {exc}") from None
    if entry.family == "sd_unet":
        from bobkit.backbones.adapters.sd_encoder import SDEncoder, sd_configs

        try:
            return SDEncoder(sd_configs(entry.timm_kwargs), materialise=materialise)
        except ValueError as exc:
            raise BadInput(f"backbone '{entry.id}', timm_kwargs: {exc}") from None
    raise BadInput(f"backbone '{entry.id}': no builder for family '{entry.family}'")


def _timm_extra(entry: Any, img_size: int | None, drop_path_rate: float) -> dict[str, Any]:
    kwargs = dict(entry.timm_kwargs)
    if img_size:
        kwargs["img_size"] = img_size
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    return kwargs


def load_weights(model: Any, entry: Any, source: Any, *, weights_dir: str | Path | None = None,
                 offline: bool | None = None, path: Path | None = None) -> tuple[Any, str, dict[str, Any]]:
    """Fetch (unless `path` is given), convert and strictly load `source` into `model`.
    Returns the module (a TorchScript format replaces it), a one-line load report, and the
    checkpoint's classifier that the converter kept aside ({} when none)."""
    from bobkit.backbones.converters import ConvertContext, converter_for
    from bobkit.backbones.loading import load_strict

    if path is None:
        from bobkit.weights import ensure

        path = ensure(source, backbone_id=entry.id, weights_dir=weights_dir, offline=offline)
    ctx = ConvertContext(path=Path(path), model=model, backbone=entry, source=source)
    converted = converter_for(source.format)(ctx)
    if converted.module is not None:
        from bobkit.backbones.adapters.sscd import TorchScriptDescriptor

        module = TorchScriptDescriptor(converted.module, int(model.num_features))
        return module, "; ".join(converted.notes), converted.classifier
    report = load_strict(model, converted, f"{path} ({source.format} → {entry.id})")
    return model, report.summary(), converted.classifier


def build(backbone: Any, pretrained: bool = True, num_classes: int = 0, features_only: bool = False,
          img_size: int | None = None, drop_path_rate: float = 0.0, weights_dir: str | Path | None = None,
          out_indices: Sequence[int] | None = None, weights_for: str = "default",
          offline: bool | None = None, checkpoint_path: str | Path | None = None,
          model_kwargs: dict | None = None) -> BuiltBackbone:
    """Build a backbone. `weights_for="detection"` loads `detection_weights` where the manifest has
    them (the checkpoint the authors' detection configs use); `checkpoint_path` loads a local file
    of the source's format instead of fetching; `model_kwargs` go to timm's constructor on top of
    the manifest's timm_kwargs (e.g. dynamic_img_size=True for a ViT in detection)."""
    from bobkit.backbones.adapters.features import MultiScaleFeatures, default_out_indices

    entry = as_backbone(backbone)
    if weights_for not in ("default", "detection"):
        raise BadInput(f"weights_for must be 'default' or 'detection', got {weights_for!r}")
    if features_only and num_classes:
        raise BadInput("features_only and num_classes > 0 exclude each other")
    source = entry.detection_weights if weights_for == "detection" and entry.detection_weights else entry.weights
    if source.format == "python" and entry.family != "custom":
        raise BadInput(f"backbone '{entry.id}': weights format 'python' needs family 'custom' with an `entry` "
                       "function that loads its own weights")
    model = construct(entry, img_size=img_size, drop_path_rate=drop_path_rate,
                      pretrained=pretrained and source.format == "python", model_kwargs=model_kwargs)
    loaded_from, report, kept_head = None, None, {}
    if pretrained and source.format == "python":
        loaded_from, report = f"python: {entry.entry}", "weights loaded by the backbone's own entry point"
    elif pretrained:
        model, report, kept_head = load_weights(model, entry, source, weights_dir=weights_dir, offline=offline,
                                                path=Path(checkpoint_path) if checkpoint_path else None)
        loaded_from = str(checkpoint_path) if checkpoint_path else _describe_source(source)
    info = list(model.feature_info)
    stages = default_out_indices(info, entry.plain_vit)
    num_features = int(model.num_features)
    if features_only:
        if out_indices is None and not stages:
            raise BadInput(f"backbone '{entry.id}' gives a pooled embedding only, not feature maps; detection "
                           "needs a module that returns (B, C, H, W) maps or has forward_intermediates/feature_info")
        model = MultiScaleFeatures(model, list(out_indices) if out_indices is not None else stages)
        feature_dims, strides = model.feature_dims, model.strides
    else:
        feature_dims = [int(info[i]["num_chs"]) for i in stages]
        strides = [int(info[i]["reduction"]) for i in stages]
    classifier = None
    if num_classes:  # features_only excludes it (checked above)
        model.reset_classifier(num_classes)
        classifier = (_use_checkpoint_head(model, kept_head, num_classes) if pretrained
                      else "new, randomly initialised (no pretrained weights)")
        if pretrained:
            report = "; ".join(filter(None, [report, f"classifier: {classifier}"]))
    return BuiltBackbone(
        model=model, num_features=num_features, feature_dims=feature_dims, strides=strides,
        resolution=int(img_size or entry.resolution), mean=tuple(entry.mean), std=tuple(entry.std),
        plain_vit=entry.plain_vit, backbone_id=entry.id, weights=loaded_from, load_report=report,
        classifier=classifier,
    )


def _use_checkpoint_head(model: Any, kept: dict[str, Any], num_classes: int) -> str:
    """Copy the checkpoint's classifier into the fresh one when it has the same shape; otherwise the
    seeded random head stays. Returns which head the build has, for BuiltBackbone.classifier."""
    import torch

    weight, bias = kept.get("weight"), kept.get("bias")
    if weight is None:
        return "new, randomly initialised (none kept from the checkpoint)"
    fc = model.get_classifier()
    want = (num_classes, int(model.num_features))
    got = tuple(weight.shape)
    if not isinstance(fc, torch.nn.Linear) or got != want or bias is None or tuple(bias.shape) != want[:1]:
        return (f"new, randomly initialised (the checkpoint's head is "
                f"{'×'.join(map(str, got))}, this module needs {want[0]}×{want[1]})")
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return f"the checkpoint's own {num_classes}-way head"


def _describe_source(source: Any) -> str:
    where = source.timm_name or source.url or source.path or f"hf://{source.hub_id}/{source.hub_file or ''}"
    return f"{source.format}: {where}"

"""The backbone zoo's single entry point: `build(backbone, pretrained=...)`.

Returns a BuiltBackbone: the torch module (a feature extractor without classifier head, a timm-style
classifier with num_classes > 0, or a multi-scale extractor with features_only=True) plus what the
task runners need to know of it. timm builds what it can by name; other checkpoint formats are
converted by functions registered per format (bobkit.backbones.converters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BuiltBackbone:
    model: Any  # torch.nn.Module; forward_features / forward_head as in timm
    num_features: int  # pooled embedding size
    feature_dims: list[int] = field(default_factory=list)  # per stage
    strides: list[int] = field(default_factory=list)
    resolution: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    plain_vit: bool = False
    backbone_id: str = ""
    weights: str | None = None  # "<format>: <source>" the weights came from; None at random init
    load_report: str | None = None  # what the strict loader did (tensors loaded, heads dropped, tables resized)
    classifier: str | None = None  # num_classes > 0: where its head came from (the checkpoint's, or random)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def build(backbone: Any, pretrained: bool = True, **kwargs: Any) -> BuiltBackbone:
    """Build a backbone from its manifest entry (a Backbone, its dict, or an id).

    Keyword options (bobkit.backbones.zoo.build): num_classes=0, features_only=False, img_size=None,
    drop_path_rate=0.0, weights_dir=None, out_indices=None, weights_for="default"|"detection",
    offline=None, checkpoint_path=None, model_kwargs=None.
    """
    from bobkit.backbones.zoo import build as _build

    return _build(backbone, pretrained=pretrained, **kwargs)

"""The backbone zoo's single entry point: `build(backbone, pretrained=...)`.

Returns a BuiltBackbone: the torch module (a feature extractor without classifier head) plus
what the task runners need to know of it. timm builds what it can by name; other checkpoint
formats are converted by functions registered per format (see converters, issue 3).
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


def build(backbone: Any, pretrained: bool = True, **kwargs: Any) -> BuiltBackbone:
    """Build a backbone from its manifest entry (a Backbone or its dict); see bobkit.backbones.zoo."""
    from bobkit.backbones.zoo import build as _build

    return _build(backbone, pretrained=pretrained, **kwargs)

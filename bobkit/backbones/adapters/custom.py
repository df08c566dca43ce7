"""A user's backbone (family `custom`): `entry: "my_pkg.models:build_backbone"` names a function
that returns a torch module. The function receives `pretrained` (when it accepts it) and the
manifest's timm_kwargs.

A module with timm's interface (forward_features, forward_head, num_features, feature_info,
forward_intermediates) is used as it is. Any other module is wrapped: its output is probed once;
a (B, D) output is taken as the pooled embedding, a (B, C, H, W) map is average-pooled and also
serves as the single feature map for detection. What cannot be adapted is said in the error.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn

from bobkit.errors import BadInput


def import_entry(entry: str, backbone_id: str):
    module_name, _, func_name = (entry or "").partition(":")
    if not module_name or not func_name:
        raise BadInput(f"backbone '{backbone_id}', field 'entry': expected 'package.module:function', got {entry!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module failing to import is their error, said in one line
        raise BadInput(f"backbone '{backbone_id}': cannot import {module_name!r} "
                       f"({type(exc).__name__}: {exc}); is it on PYTHONPATH?") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise BadInput(f"backbone '{backbone_id}': {module_name} has no function {func_name!r}")
    return fn


def build_user_backbone(entry: Any, pretrained: bool, probe_size: int | None = None) -> nn.Module:
    fn = import_entry(entry.entry, entry.id)
    kwargs = dict(entry.timm_kwargs)
    params = inspect.signature(fn).parameters
    if "pretrained" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["pretrained"] = pretrained
    try:
        module = fn(**kwargs)
    except Exception as exc:
        raise BadInput(f"backbone '{entry.id}': {entry.entry}(...) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise BadInput(f"backbone '{entry.id}': {entry.entry} returned {type(module).__name__}, not a torch.nn.Module")
    if all(hasattr(module, a) for a in ("forward_features", "forward_head", "num_features", "feature_info",
                                         "reset_classifier")):
        return module
    return WrappedBackbone(module, entry.id, probe_size or entry.resolution)


class WrappedBackbone(nn.Module):
    def __init__(self, module: nn.Module, backbone_id: str, probe_size: int) -> None:
        super().__init__()
        self.module = module
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(1, 3, probe_size, probe_size))
        module.train(was_training)
        if isinstance(out, (list, tuple)) and out and all(isinstance(o, torch.Tensor) for o in out):
            out = out[-1]
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BadInput(f"backbone '{backbone_id}': the module returns {shape}; bobkit needs a (batch, dim) "
                           "embedding or a (batch, channels, height, width) feature map")
        self.spatial = out.ndim == 4
        self.num_features = int(out.shape[1])
        self.head_hidden_size = self.num_features
        reduction = max(1, probe_size // int(out.shape[-1])) if self.spatial else 0
        self.feature_info = [{"num_chs": self.num_features, "reduction": reduction, "module": "module"}]
        self.reset_classifier(0)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out[-1] if isinstance(out, (list, tuple)) else out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.ndim == 4:
            x = x.mean(dim=(-2, -1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, intermediates_only=False, **_):
        if not self.spatial:
            raise BadInput("this backbone returns a pooled embedding only; detection needs feature maps: return a "
                           "(B, C, H, W) map or give the module forward_intermediates() and feature_info")
        feat = self.forward_features(x)
        return [feat] if intermediates_only else (feat, [feat])

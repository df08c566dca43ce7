"""Strict loading of a converted checkpoint into the module the zoo built.

Every key the module expects must be present and none may be left over. The only tensors bobkit
changes on the way are position tables whose size depends on the input resolution (a ViT's
`pos_embed`, SAM's `rel_pos_h/w`): they are interpolated to the built resolution and reported.
BatchNorm's `num_batches_tracked` counter, absent from old torchvision files, is filled with 0
(it is a step counter, not a weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bobkit.backbones.converters.common import CheckpointMismatch, Converted


@dataclass
class LoadReport:
    loaded: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of source keys
    adapted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.loaded} tensors loaded"]
        parts += [f"dropped {n} ({why})" for why, n in self.dropped.items()]
        parts += self.adapted + self.notes
        return "; ".join(parts)


def load_strict(model: Any, converted: Converted, where: str) -> LoadReport:
    """Load `converted.state` into `model`; raise CheckpointMismatch naming missing/unexpected keys."""
    import torch

    expected = model.state_dict()
    state = dict(converted.state)
    report = LoadReport(dropped={k: len(v) for k, v in converted.dropped.items()}, notes=list(converted.notes))
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointMismatch(f"{where}: " + _describe(missing, unexpected))
    for key, target in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointMismatch(f"{where}: '{key}' is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(target.shape):
            state[key] = _adapt(key, value, target, model, where)
            report.adapted.append(f"{key} {tuple(value.shape)}→{tuple(target.shape)}")
    model.load_state_dict(state, strict=True)
    report.loaded = len(state)
    return report


def _describe(missing: list[str], unexpected: list[str]) -> str:
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"the checkpoint lacks {few(missing)}")
    if unexpected:
        parts.append(f"the module has no {few(unexpected)}")
    return "; ".join(parts) + "; the checkpoint does not fit this architecture (check timm_model/timm_kwargs)"


def _adapt(key: str, value: Any, target: Any, model: Any, where: str) -> Any:
    """Interpolate a resolution-dependent position table; refuse any other shape change."""
    import torch.nn.functional as F
    from timm.layers import resample_abs_pos_embed, resample_abs_pos_embed_nhwc

    leaf = key.rsplit(".", 1)[-1]
    if leaf == "pos_embed" and value.ndim == 4 and target.ndim == 4:  # SAM: (1, H, W, C)
        return resample_abs_pos_embed_nhwc(value.float(), list(target.shape[1:3])).to(value.dtype)
    if leaf == "pos_embed" and value.ndim == 3 and target.ndim == 3 and value.shape[-1] == target.shape[-1]:
        prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is None:
            side = int(round((target.shape[1] - prefix) ** 0.5))
            grid = (side, side)
        return resample_abs_pos_embed(value.float(), list(grid), num_prefix_tokens=prefix).to(value.dtype)
    if leaf in ("rel_pos_h", "rel_pos_w") and value.ndim == 2 and value.shape[1] == target.shape[1]:
        out = F.interpolate(value.float().t().unsqueeze(0), size=target.shape[0], mode="linear", align_corners=False)
        return out.squeeze(0).t().to(value.dtype)
    raise CheckpointMismatch(f"{where}: '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                             f"{tuple(target.shape)} in the module; the checkpoint does not fit this architecture")

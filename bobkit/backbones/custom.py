"""Check a plugged-in backbone before any run is planned: does it give what each task family needs?

The zoo (bobkit.backbones.zoo, adapters/custom.py) builds a user's backbone; this module tries it once on
a tiny batch, at the resolution the runs will use, so a wrong shape is one clear line at the start
instead of a failed run an hour later. What a backbone must give:

- classification, OOD classification, retrieval: a pooled embedding (batch, dim), either from
  forward_features + forward_head(pre_logits=True) (timm's interface) or from forward itself;
- detection, OOD detection: multi-scale feature maps, from `feature_info` (one dict per stage with
  `num_chs` and `reduction`) plus `forward_intermediates(x, indices=..., intermediates_only=True)`
  returning (batch, channels, height, width) maps; a module whose forward returns one
  (batch, channels, height, width) map is used as a single-scale feature.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bobkit.errors import BadInput

POOLED_TASKS = ("classification", "ood_classification", "retrieval")
DETECTION_TASKS = ("detection", "ood_detection")


@dataclass
class PluginProbe:
    """What one try of a backbone found."""

    backbone: str
    embedding_dim: int | None = None
    feature_dims: list[int] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    detection_problem: str | None = None
    params_m: float | None = None

    @property
    def supports_detection(self) -> bool:
        return self.detection_problem is None and bool(self.feature_dims)


def importable_from_cwd() -> None:
    """`module:function` entries resolve like `python -m` does: the working folder first. Children started
    by the local executor inherit it through PYTHONPATH."""
    import os

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd] + parts)


def probe_backbone(entry: Any, *, resolution: int, detection_resolution: int | None = None,
                   tasks: Iterable[str] = POOLED_TASKS, pretrained: bool = False) -> PluginProbe:
    """Build the backbone (random init unless `pretrained`) and check its outputs for `tasks`.
    Pooled-feature problems raise BadInput; a detection problem raises only when a detection task is asked."""
    import torch

    from bobkit.backbones import build

    tasks = list(tasks)
    found = PluginProbe(entry.id)
    built = build(entry, pretrained=pretrained, img_size=resolution)
    found.params_m = round(sum(p.numel() for p in built.model.parameters()) / 1e6, 3)
    model = built.model.eval()
    x = torch.zeros(2, 3, resolution, resolution)
    with torch.no_grad():
        try:
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"backbone '{entry.id}' ({_where(entry)}) fails on a (2, 3, {resolution}, {resolution}) "
                           f"batch: {type(exc).__name__}: {exc}") from None
    if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[0] != 2:
        shape = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
        raise BadInput(f"backbone '{entry.id}' ({_where(entry)}): the pooled features have shape {shape}; "
                       "classification and retrieval need (batch, dim): make forward_head(x, pre_logits=True) "
                       "(or forward) pool to one vector per image")
    if int(pooled.shape[1]) != int(built.num_features):
        raise BadInput(f"backbone '{entry.id}' ({_where(entry)}): num_features says {built.num_features} but the "
                       f"pooled features have {int(pooled.shape[1])} dimensions; set num_features to match")
    found.embedding_dim = int(pooled.shape[1])
    det_res = detection_resolution or resolution
    found.detection_problem = _detection_problem(entry, det_res, found)
    wanted = [t for t in tasks if t in DETECTION_TASKS]
    if wanted and found.detection_problem:
        raise BadInput(f"backbone '{entry.id}' cannot run {', '.join(wanted)}: {found.detection_problem}; "
                       "leave detection out of --tasks (and of the manifest's `tasks`) or add the convention "
                       "(docs/gauntlet.md)")
    return found


def _detection_problem(entry: Any, resolution: int, found: PluginProbe) -> str | None:
    import torch

    from bobkit.backbones import build

    try:
        feats = build(entry, pretrained=False, features_only=True, img_size=resolution)
    except BadInput as exc:
        return _strip_id(str(exc), entry.id)
    try:
        with torch.no_grad():
            maps = feats.model.eval()(torch.zeros(1, 3, resolution, resolution))
    except Exception as exc:
        return f"forward_intermediates fails: {type(exc).__name__}: {exc}"
    if not isinstance(maps, (list, tuple)) or not maps or any(
            not isinstance(m, torch.Tensor) or m.ndim != 4 for m in maps):
        return ("forward_intermediates(x, indices=..., intermediates_only=True) must return a list of "
                "(batch, channels, height, width) maps")
    for m, dim in zip(maps, feats.feature_dims):
        if int(m.shape[1]) != dim:
            return f"feature_info says {dim} channels, the map has {int(m.shape[1])}"
    found.feature_dims, found.strides = list(feats.feature_dims), list(feats.strides)
    return None


def _strip_id(message: str, backbone_id: str) -> str:
    prefix = f"backbone '{backbone_id}' "
    return message[len(prefix):] if message.startswith(prefix) else message


def _where(entry: Any) -> str:
    return entry.entry if entry.family == "custom" and entry.entry else f"timm {entry.timm_model}"

"""Evaluation of a classifier: top-1/top-5 accuracy, or mean AUROC for multi-label sets (CheXpert).

Counts are summed across DDP ranks; AUROC gathers every score first (scikit-learn's roc_auc_score).
A class whose evaluation labels are all one value has no AUROC and is left out of the mean.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from bobkit.tasks.cls_runtime import Runtime, all_gather_cat, all_reduce_sum


def to_device(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    x = x.to(rt.device, non_blocking=True)
    if rt.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, rt: Runtime, *, multilabel: bool, num_classes: int,
             class_names: list[str] | None = None) -> dict[str, float]:
    model.eval()
    if multilabel:
        return _evaluate_auc(model, batches, rt, class_names or [str(i) for i in range(num_classes)])
    k5 = min(5, num_classes)
    correct1 = correct5 = loss_sum = 0.0
    seen = 0
    for x, y in batches:
        x, y = to_device(x, rt), y.to(rt.device, non_blocking=True)
        with rt.autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k5, dim=1).indices
        hits = top.eq(y[:, None])
        correct1 += hits[:, :1].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        seen += y.shape[0]
    correct1, correct5, loss_sum, seen = all_reduce_sum(rt, [correct1, correct5, loss_sum, float(seen)])
    if seen == 0:
        raise RuntimeError("the evaluation split is empty")
    return {"top1": correct1 / seen, "top5": correct5 / seen, "loss": loss_sum / seen}


def _evaluate_auc(model, batches, rt: Runtime, class_names: list[str]) -> dict[str, float]:
    scores, labels = [], []
    for x, y in batches:
        with rt.autocast():
            logits = model(to_device(x, rt))
        scores.append(torch.sigmoid(logits.float()).cpu())
        labels.append(y.float().cpu())
    s = all_gather_cat(rt, torch.cat(scores) if scores else torch.zeros(0, len(class_names)))
    t = all_gather_cat(rt, torch.cat(labels) if labels else torch.zeros(0, len(class_names)))
    loss = torch.nn.functional.binary_cross_entropy(s.clamp(1e-7, 1 - 1e-7), t).item() if len(t) else math.nan
    return {**mean_auroc(t.numpy(), s.numpy(), class_names), "loss": loss}


def mean_auroc(labels, scores, class_names: list[str]) -> dict[str, float]:
    """{'auc': mean over classes with both labels present, 'auc_<class>': each}."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, Any] = {}
    per = []
    for j, name in enumerate(class_names):
        col = labels[:, j]
        if col.min() == col.max():
            continue
        value = float(roc_auc_score(col, scores[:, j]))
        out[f"auc_{name.lower().replace(' ', '_')}"] = value
        per.append(value)
    if not per:
        raise RuntimeError("AUROC is undefined: every class has a single label value in the evaluation split")
    out["auc"] = sum(per) / len(per)
    return out

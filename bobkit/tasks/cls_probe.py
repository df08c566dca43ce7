"""Linear probing on cached features: run the frozen backbone once, train the head many epochs.

The authors' probe (MAE-style) augments every epoch (random resized crop + flip), which costs a
backbone forward pass per image per epoch. With `feature_cache: true` bobkit extracts the
features once with the evaluation transform and trains the head on them: an order of magnitude
faster, but without augmentation. The run records that as a deviation in its provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from bobkit.tasks import cls_checkpoint as ckpt
from bobkit.tasks.cls_data import SeededSampler, ShardSampler, TrainBatches, eval_batches
from bobkit.tasks.cls_eval import evaluate, to_device
from bobkit.tasks.cls_runtime import Runtime, all_gather_cat

log = logging.getLogger("bobkit.run")

FEATURES = "features.pt"
DEVIATION = ("feature_cache_no_augmentation",
             "linear probe trained on features cached once with the evaluation transform: no random resized "
             "crop or flip per epoch (the authors augment every epoch)")


@torch.no_grad()
def extract(backbone: torch.nn.Module, dataset, rt: Runtime, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and targets of every item, in dataset order (sharded over ranks, then gathered)."""
    backbone.eval()
    loader = eval_batches(dataset, rt, batch)
    feats, targets, index = [], [], []
    order = iter(loader.sampler)
    for x, y in loader:
        with rt.autocast():
            f = backbone(to_device(x, rt))
        feats.append(f.float().cpu())
        targets.append(torch.as_tensor(y).cpu())
        index += [next(order) for _ in range(len(y))]
    f = all_gather_cat(rt, torch.cat(feats))
    t = all_gather_cat(rt, torch.cat(targets))
    i = all_gather_cat(rt, torch.tensor(index))
    back = torch.empty_like(i)
    back[i] = torch.arange(len(i))
    return f[back], t[back]


def cached_features(backbone, train_set, eval_set, rt: Runtime, batch: int, checkpoints: Path, run_id: str):
    """Features from checkpoints/features.pt when a resumed run has them, else extracted now and saved."""
    path = checkpoints / FEATURES
    if path.is_file():
        saved = ckpt.load(path)
        if saved.get("run_id") == run_id:
            log.info("feature cache: reusing %s", path)
            return saved["train"], saved["eval"]
    log.info("feature cache: extracting %d training and %d evaluation images once", len(train_set), len(eval_set))
    train = extract(backbone, train_set, rt, batch)
    evaluation = extract(backbone, eval_set, rt, batch)
    if rt.is_main:
        ckpt.atomic_save({"run_id": run_id, "train": train, "eval": evaluation}, path)
    return train, evaluation


def feature_batches(features: tuple[torch.Tensor, torch.Tensor], rt: Runtime, batch: int, seed: int) -> TrainBatches:
    ds = TensorDataset(*features)
    sampler = SeededSampler(len(ds), seed, min_samples=batch, rank=rt.rank, world_size=rt.world_size)
    gen = torch.Generator()
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, generator=gen)
    return TrainBatches(loader, sampler, gen, seed)


def feature_eval_batches(features: tuple[torch.Tensor, torch.Tensor], rt: Runtime, batch: int) -> DataLoader:
    ds = TensorDataset(*features)
    return DataLoader(ds, batch_size=batch, sampler=ShardSampler(len(ds), rt.rank, rt.world_size))


def head_evaluator(eval_features, rt: Runtime, batch: int, *, multilabel: bool, num_classes: int,
                   class_names: list[str]):
    def run(head: torch.nn.Module) -> dict[str, Any]:
        return evaluate(head, feature_eval_batches(eval_features, rt, batch), rt, multilabel=multilabel,
                        num_classes=num_classes, class_names=class_names)

    return run

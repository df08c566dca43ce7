"""Classification runner: fine-tuning, linear probing, 1 %/10 % ImageNet, CheXpert (BoB §1).

`run(spec, run_dir, data_root)` reads everything from the RunSpec: the protocols differ only in
their hparams (which parameters train, which head, which optimizer and augmentation), so one
path serves them all. The reported metric is the best epoch's, as the authors report it
(timm's "best metric"); the last epoch's is kept next to it (`top1_last`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobkit import provenance
from bobkit.errors import BadInput
from bobkit.manifest.derived import per_update_schedule
from bobkit.results import RunDir

log = logging.getLogger("bobkit.run")


def run(spec, run_dir: RunDir, data_root: Path) -> dict[str, float]:
    from bobkit.tasks import cls_runtime

    hp = spec.typed_hparams()
    with cls_runtime.running(hp, smoke=spec.smoke) as rt:
        return _run(spec, hp, run_dir, Path(data_root), rt)


def _run(spec, hp, run_dir: RunDir, data_root: Path, rt) -> dict[str, float]:
    from bobkit.tasks.cls_data import normalisation, open_data
    from bobkit.tasks.cls_model import backbone_crop_pct, build_classifier

    if rt.is_main:
        provenance.record(run_dir.path, "runtime", rt.describe())
    data = open_data(spec, hp, run_dir.path, data_root)
    log.info("data: %s (%s) %d training / %d evaluation images, %d classes%s", spec.dataset,
             "synthetic" if data.synthetic else data.root, len(data.train.items), len(data.eval.items),
             data.num_classes, ", multi-label" if data.multilabel else "")
    for note in data.notes:
        log.info("data: %s", note)
    model, built = build_classifier(spec, data.num_classes, hp)
    mean, std = normalisation(data, built)
    crop_pct = backbone_crop_pct(built) if hp.crop_pct is None else hp.crop_pct
    job = Job(spec, hp, run_dir, data, model, rt, mean, std, crop_pct)
    run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
    result, final_state = _probe_on_cached_features(job) if hp.feature_cache else _train_on_images(job)
    if rt.is_main:
        _finish(job, result, final_state)
    return summarise(result.best, result.last, hp.eval_metric)


@dataclass
class Job:
    """What the two training paths share."""

    spec: Any
    hp: Any  # the spec's ClassificationHparams
    run_dir: RunDir
    data: Any  # cls_data.ClassificationData
    model: Any  # cls_model.Classifier
    rt: Any  # cls_runtime.Runtime
    mean: tuple
    std: tuple
    crop_pct: float | None

    @property
    def batch(self) -> int:
        return self.hp.per_gpu_batch

    def fit_options(self) -> dict[str, Any]:
        main = self.rt.is_main
        return dict(hp=self.hp, rt=self.rt, checkpoints=self.run_dir.checkpoints, run_id=self.spec.id,
                    num_classes=self.data.num_classes, multilabel=self.data.multilabel,
                    per_update_schedule=per_update_schedule(self.spec.protocol),
                    summary_csv=self.run_dir.path / "summary.csv" if main else None,
                    provenance_dir=self.run_dir.path if main else None, named_model=self.model)


def _train_on_images(job: Job):
    """Fine-tuning, or a linear probe that augments every epoch (the authors' way)."""
    from bobkit.tasks import cls_checkpoint as ckpt
    from bobkit.tasks.cls_data import eval_batches, image_datasets, train_batches
    from bobkit.tasks.cls_eval import evaluate
    from bobkit.tasks.cls_model import trainable_param_groups
    from bobkit.tasks.cls_train import Fit

    hp, data, rt = job.hp, job.data, job.rt
    train_set, eval_set = image_datasets(data, hp, job.mean, job.std, job.crop_pct, augment=True)
    eval_loader = eval_batches(eval_set, rt, job.batch)

    def evaluate_images(m):
        return evaluate(m, eval_loader, rt, multilabel=data.multilabel, num_classes=data.num_classes,
                        class_names=data.train.classes)

    groups = trainable_param_groups(job.model, hp.weight_decay, hp.layer_decay)
    result = Fit(model=job.model, param_groups=groups, train=train_batches(train_set, rt, job.batch, job.spec.seed),
                 evaluate=evaluate_images, **job.fit_options()).run()
    if not rt.is_main:
        return result, None
    checkpoints = job.run_dir.checkpoints
    return result, _best_weights(checkpoints, result.best_epoch) or ckpt.load(checkpoints / ckpt.FINAL)["model"]


def _probe_on_cached_features(job: Job):
    """A linear probe on features extracted once (no augmentation: recorded as a deviation)."""
    from bobkit.tasks import cls_checkpoint as ckpt
    from bobkit.tasks import cls_probe
    from bobkit.tasks.cls_data import image_datasets
    from bobkit.tasks.cls_model import trainable_param_groups
    from bobkit.tasks.cls_train import Fit

    spec, hp, data, rt, model = job.spec, job.hp, job.data, job.rt, job.model
    checkpoints = job.run_dir.checkpoints
    if hp.trainable != "head":
        raise BadInput(f"recipe '{spec.recipe}': feature_cache needs a frozen backbone (trainable: head)")
    if rt.is_main:
        provenance.note_deviation(job.run_dir.path, *cls_probe.DEVIATION)
    train_f = eval_f = None
    if ckpt.finished_state(checkpoints, spec.id) is None:
        train_set, eval_set = image_datasets(data, hp, job.mean, job.std, job.crop_pct, augment=False)
        model.backbone.to(rt.device)
        train_f, eval_f = cls_probe.cached_features(model.backbone, train_set, eval_set, rt, job.batch, checkpoints,
                                                    spec.id)
    result = Fit(model=model.head, param_groups=trainable_param_groups(model, hp.weight_decay, None),
                 train=cls_probe.feature_batches(train_f, rt, job.batch, spec.seed) if train_f is not None else None,
                 evaluate=cls_probe.head_evaluator(eval_f, rt, job.batch, multilabel=data.multilabel,
                                                   num_classes=data.num_classes, class_names=data.train.classes),
                 **job.fit_options()).run()
    if not rt.is_main:
        return result, None
    best = _best_weights(checkpoints, result.best_epoch)
    if best is None:  # killed after final.pt was written: it already holds the whole classifier
        return result, ckpt.load(checkpoints / ckpt.FINAL)["model"]
    model.head.load_state_dict(best)
    return result, model.state_dict()


def _finish(job: Job, result, final_state: dict[str, Any]) -> None:
    """final.pt (the best epoch's classifier), last.pt shrunk to a marker, caches dropped, provenance."""
    from bobkit.tasks import cls_checkpoint as ckpt
    from bobkit.tasks.cls_model import head_kind
    from bobkit.tasks.cls_probe import FEATURES

    spec, hp, data, checkpoints = job.spec, job.hp, job.data, job.run_dir.checkpoints
    ckpt.atomic_save(ckpt.final_checkpoint(final_state, num_classes=data.num_classes, backbone=spec.backbone,
                                           head=head_kind(hp), epoch=result.best_epoch, drop=hp.drop,
                                           resolution=hp.resolution, classes=data.train.classes),
                     checkpoints / ckpt.FINAL)
    ckpt.atomic_save(ckpt.finished_marker(spec.id, len(result.history), result.history, result.best,
                                          result.best_epoch), checkpoints / ckpt.LAST)
    ckpt.prune_best(checkpoints, None)
    (checkpoints / FEATURES).unlink(missing_ok=True)  # the probe's feature cache serves training only
    provenance.record(job.run_dir.path, "training", {
        "best_epoch": result.best_epoch, "epochs": len(result.history), "resumed_from_epoch": result.resumed_from,
        "train_loss_first": result.history[0]["train_loss"], "train_loss_last": result.history[-1]["train_loss"],
        "train_images": len(data.train.items), "eval_images": len(data.eval.items),
        "num_classes": data.num_classes, "synthetic_data": data.synthetic, "data_notes": data.notes,
    })


def _best_weights(checkpoints: Path, epoch: int) -> dict[str, Any] | None:
    """The best epoch's weights saved while training (None once final.pt has taken them over)."""
    from bobkit.tasks import cls_checkpoint as ckpt

    path = ckpt.best_path(checkpoints, epoch)
    return ckpt.load(path)["model"] if path.is_file() else None


def summarise(best: dict[str, Any], last: dict[str, Any], metric: str) -> dict[str, float]:
    """The best epoch's metrics under their own names, the last epoch's with a `_last` suffix."""
    names = ["auc"] + sorted(k for k in best if k.startswith("auc_")) if metric == "auc" else ["top1", "top5"]
    out: dict[str, float] = {}
    for n in names:
        if n in best:
            out[n] = float(best[n])
    for n in names[:1] + (["top5"] if metric != "auc" else []):
        if n in last:
            out[f"{n}_last"] = float(last[n])
    return out

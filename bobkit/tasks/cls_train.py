"""The training loop shared by fine-tuning and linear probing, resumable epoch by epoch.

Every ingredient is a timm factory configured from the RunSpec's hparams: create_optimizer_v2
(AdamW / SGD / LARS, layer-wise decay through the param groups), create_scheduler_v2 (cosine with
warm-up from warmup_lr down to min_lr), Mixup/CutMix, SoftTargetCrossEntropy or
LabelSmoothingCrossEntropy. bobkit adds gradient accumulation up to the recipe's effective batch
size, AMP, DDP, and an atomic checkpoint after every epoch that a killed run resumes from.

Schedules step per epoch for fine-tuning (the authors' timm train.py) and per update for the linear
probe (the MAE-style probe adjusts the lr every iteration).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bobkit import provenance
from bobkit.errors import BadInput, RunFailed
from bobkit.manifest import derived
from bobkit.manifest.hparams import ClassificationHparams
from bobkit.tasks import cls_checkpoint as ckpt
from bobkit.tasks.cls_eval import to_device
from bobkit.tasks.cls_runtime import Runtime, all_reduce_sum, rng_state, set_rng_state

log = logging.getLogger("bobkit.run")

KILL_HOOK = "BOBKIT_TEST_KILL_AFTER_EPOCH"  # tests: SIGKILL this process once that epoch's checkpoint is saved


def accumulation_steps(hp: ClassificationHparams, world_size: int) -> int:
    """accum = batch_size / (per_gpu_batch x world_size); the recipe's effective batch must divide evenly
    (bobkit.manifest.derived, which `bobkit explain` prints from)."""
    return derived.accumulation(hp.per_gpu_batch, hp.batch_size, world_size)


def effective_lr(hp: ClassificationHparams) -> float:
    """The lr the optimizer gets: lr as given, or blr x batch_size / 256 when the recipe scales it
    (lr_scaling linear_256, the MAE-style probe); bobkit.manifest.derived decides it."""
    return derived.effective_lr(hp.lr, hp.batch_size, hp.lr_scaling)


def make_optimizer(param_groups: list[dict], hp: ClassificationHparams) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if hp.optimizer in ("sgd", "lars"):
        kwargs["momentum"] = hp.momentum  # required for these by the schema
    if hp.optimizer == "sgd" and hp.momentum == 0:
        raise BadInput("hparams: optimizer sgd is timm's SGD with Nesterov momentum, which needs momentum > 0 "
                       "(got momentum 0)")
    return create_optimizer_v2(param_groups, opt=hp.optimizer, lr=effective_lr(hp), weight_decay=hp.weight_decay,
                               **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, hp: ClassificationHparams, updates_per_epoch: int,
                   per_update: bool):
    from timm.scheduler import create_scheduler_v2

    if hp.schedule != "cosine":
        raise BadInput(f"hparams.schedule '{hp.schedule}': classification runs support 'cosine' only")
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=hp.epochs,
        warmup_epochs=hp.warmup_epochs if per_update else int(round(hp.warmup_epochs)), warmup_lr=hp.warmup_lr,
        min_lr=hp.min_lr, cooldown_epochs=0, step_on_epochs=not per_update, updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def make_mixup(hp: ClassificationHparams, num_classes: int, multilabel: bool):
    if multilabel or (hp.mixup <= 0 and hp.cutmix <= 0):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=hp.mixup, cutmix_alpha=hp.cutmix, prob=hp.mixup_prob, switch_prob=hp.mixup_switch_prob,
                 mode=hp.mixup_mode, label_smoothing=hp.label_smoothing, num_classes=num_classes)


def make_loss(hp: ClassificationHparams, mixup, multilabel: bool) -> torch.nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if multilabel:
        return torch.nn.BCEWithLogitsLoss()
    if mixup is not None:
        return SoftTargetCrossEntropy()  # mixup already folds label smoothing into the targets
    if hp.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=hp.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def optimization_facts(hp: ClassificationHparams, *, world_size: int, accumulation: int, updates_per_epoch: int,
                       per_update: bool, scheduler, param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    """What the optimizer and its schedule actually got, for the run's provenance (`optimization`).

    warmup_steps is timm's warmup length as the scheduler holds it, in warmup_unit: optimizer updates
    (warmup_epochs x updates_per_epoch) when the schedule steps per update, epochs when per epoch.
    updates_per_epoch is the loader's own count (what `bobkit explain` estimates from the manifest).
    """
    return {
        "effective_lr": effective_lr(hp), "lr_scaling": hp.lr_scaling,
        "effective_batch": hp.per_gpu_batch * world_size * accumulation,
        "per_gpu_batch": hp.per_gpu_batch, "world_size": world_size, "accumulation": accumulation,
        "updates_per_epoch": updates_per_epoch,
        "warmup_steps": scheduler.warmup_t, "warmup_unit": "updates" if per_update else "epochs",
        "param_groups": param_groups,
    }


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best: dict[str, float]
    best_epoch: int
    last: dict[str, float]
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Fit:
    """One training job: `model` is what the optimizer updates (the classifier, or a probe head)."""

    model: torch.nn.Module
    param_groups: list[dict]
    train: Any  # cls_data.TrainBatches
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    hp: ClassificationHparams
    rt: Runtime
    checkpoints: Path
    run_id: str
    num_classes: int
    multilabel: bool = False
    per_update_schedule: bool = False
    summary_csv: Path | None = None
    provenance_dir: Path | None = None  # the run folder (main rank): the optimization facts are recorded there
    named_model: torch.nn.Module | None = None  # names the param groups' parameters (default: model)

    def run(self) -> FitResult:
        hp, rt = self.hp, self.rt
        done = ckpt.finished_state(self.checkpoints, self.run_id)
        if done is not None:  # killed after final.pt, before metrics.json: nothing left to train
            log.info("training finished earlier; %s holds the weights", self.checkpoints / ckpt.FINAL)
            last = {k[len("eval_"):]: v for k, v in done["history"][-1].items() if k.startswith("eval_")}
            return FitResult(done["history"], done["best"], done["best_epoch"], last, resumed_from=done["epoch"])
        metric = hp.eval_metric
        accum = accumulation_steps(hp, rt.world_size)
        micro_batches = len(self.train)
        updates_per_epoch = micro_batches // accum
        if updates_per_epoch < 1:
            raise BadInput(f"the training split gives {micro_batches} batch(es) of {hp.per_gpu_batch} per GPU, "
                           f"fewer than one update of {accum} accumulated batches; lower batch_size")
        model = self.model.to(rt.device)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(self.param_groups, hp)
        scheduler = make_scheduler(optimizer, hp, updates_per_epoch, self.per_update_schedule)
        if self.provenance_dir is not None:
            from bobkit.tasks.cls_model import describe_param_groups

            groups = describe_param_groups(self.named_model or self.model, optimizer.param_groups,
                                           lr=effective_lr(hp))
            provenance.record(self.provenance_dir, "optimization", optimization_facts(
                hp, world_size=rt.world_size, accumulation=accum, updates_per_epoch=updates_per_epoch,
                per_update=self.per_update_schedule, scheduler=scheduler, param_groups=groups))
        mixup = make_mixup(hp, self.num_classes, self.multilabel)
        loss_fn = make_loss(hp, mixup, self.multilabel).to(rt.device)
        scaler = torch.amp.GradScaler("cuda") if rt.needs_scaler else None
        wrapped = model
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)

        history: list[dict[str, Any]] = []
        best: dict[str, float] = {}
        best_epoch = 0
        start_epoch = 0
        last_path = self.checkpoints / ckpt.LAST
        if last_path.is_file():
            state = ckpt.load(last_path)
            if state.get("run_id") != self.run_id:
                raise BadInput(f"{last_path}: a checkpoint of another run (id {state.get('run_id')}); remove it")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            history, best, best_epoch, start_epoch = state["history"], state["best"], state["best_epoch"], state["epoch"]
            if rt.is_main:
                ckpt.prune_best(self.checkpoints, best_epoch)
            log.info("resuming from %s after epoch %d of %d", last_path, start_epoch, hp.epochs)

        epochs = hp.epochs
        log.info("training %d epoch(s): %d update(s)/epoch, %d x %d per GPU x %d GPU(s) = batch %d, lr %.3g, %s",
                 epochs, updates_per_epoch, accum, hp.per_gpu_batch, rt.world_size, hp.batch_size,
                 effective_lr(hp), "AMP " + str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else "fp32")
        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            train_loss = self._train_epoch(wrapped, model, optimizer, scheduler, scaler, mixup, loss_fn, epoch,
                                           accum, updates_per_epoch)
            scheduler.step(epoch + 1)
            scores = self.evaluate(model) if evaluated_epoch(epoch + 1, epochs, hp.eval_interval) else {}
            lr_now = max(g["lr"] for g in optimizer.param_groups)
            entry = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr_now, "seconds": time.time() - t0,
                     **{f"eval_{k}": v for k, v in scores.items()}}
            history.append(entry)
            improved = bool(scores) and (not best or scores[metric] > best[metric])
            if improved:
                best, best_epoch = dict(scores), epoch + 1
            log.info("epoch %d/%d  train_loss %.4f  %s  (%.1fs)%s", epoch + 1, epochs, train_loss,
                     "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if not k.startswith("auc_"))
                     or f"(not evaluated: every {hp.eval_interval} epochs)",
                     entry["seconds"], "  best" if improved else "")
            if rt.is_main:
                if improved:
                    ckpt.atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "run_id": self.run_id},
                                     ckpt.best_path(self.checkpoints, epoch + 1))
                ckpt.atomic_save({
                    "run_id": self.run_id, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                    "history": history, "best": best, "best_epoch": best_epoch,
                }, last_path)
                ckpt.prune_best(self.checkpoints, best_epoch)
                if self.summary_csv is not None:
                    write_summary(self.summary_csv, history)
            if os.environ.get(KILL_HOOK) == str(epoch + 1) and rt.is_main:
                log.info("test hook %s=%d: killing this process", KILL_HOOK, epoch + 1)
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)
        if not history:
            raise RunFailed("no epoch was trained (epochs is 0?)")
        last = {k[len("eval_"):]: v for k, v in history[-1].items() if k.startswith("eval_")}
        return FitResult(history, best, best_epoch, last, resumed_from=start_epoch)

    def _train_epoch(self, wrapped, model, optimizer, scheduler, scaler, mixup, loss_fn, epoch: int, accum: int,
                     updates_per_epoch: int) -> float:
        rt = self.rt
        wrapped.train()
        self.train.set_epoch(epoch)
        optimizer.zero_grad(set_to_none=True)
        num_updates = epoch * updates_per_epoch
        loss_sum = torch.zeros((), device=rt.device)
        steps = 0
        limit = updates_per_epoch * accum
        for i, (x, y) in enumerate(self.train.loader):
            if i >= limit:
                break
            x, y = to_device(x, rt), y.to(rt.device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            sync = (i + 1) % accum == 0
            no_sync = wrapped.no_sync() if (rt.distributed and not sync) else contextlib.nullcontext()
            with no_sync:
                with rt.autocast():
                    loss = loss_fn(wrapped(x), y)
                scaled = loss / accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += loss.detach().float()
            steps += 1
            if sync:
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                num_updates += 1
                scheduler.step_update(num_updates=num_updates)
        total, count = all_reduce_sum(rt, [loss_sum.item(), float(steps)])
        mean = total / max(count, 1.0)
        if not math.isfinite(mean):
            raise RunFailed(f"the training loss is {mean} at epoch {epoch + 1}; lower the lr or turn AMP off")
        return mean


def evaluated_epoch(epoch: int, epochs: int, interval: int) -> bool:
    """Epoch `epoch` (1-based) is evaluated when its 0-based index is a multiple of `interval` (the
    recipe's eval_interval), or it is the last: epochs 1, 3, 5, … for interval 2, as Medical-MAE's
    CheXpert script counts."""
    return (epoch - 1) % interval == 0 or epoch == epochs


def write_summary(path: Path, history: list[dict[str, Any]]) -> None:
    """summary.csv as timm's train.py writes it: one row per epoch."""
    from bobkit.results import atomic_write_text

    columns: list[str] = []
    for h in history:
        columns += [k for k in h if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())

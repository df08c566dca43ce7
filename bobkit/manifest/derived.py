"""Values derived from a run's hyperparameters: what the optimizer sees, decided here once.

The runners (bobkit.tasks) and `bobkit explain` both call these, so the lr, batch and warm-up that
explain prints before a run are the ones the run uses. No torch here.
"""

from __future__ import annotations

from typing import Any

from bobkit.errors import BadInput


def accumulation(per_gpu_batch: int, batch_size: int, world_size: int) -> int:
    """Gradient accumulation steps: batch_size = per_gpu_batch × world_size × accumulation, exactly."""
    per_step = per_gpu_batch * world_size
    if batch_size % per_step:
        raise BadInput(f"hparams: batch_size {batch_size} is not a multiple of per_gpu_batch {per_gpu_batch} x "
                       f"{world_size} GPU(s); change per_gpu_batch or the number of GPUs")
    return max(1, batch_size // per_step)


def effective_lr(lr: float, batch_size: int, lr_scaling: str = "absolute") -> float:
    """The lr the optimizer starts from: as given, or blr × batch_size / 256 (MAE-style `linear_256`)."""
    if lr_scaling == "linear_256":
        return lr * batch_size / 256.0
    return lr


def derived_values(hp: Any, *, world_size: int, train_images: int | None = None,
                   per_update_schedule: bool = False) -> dict[str, Any]:
    """The numbers a reader needs before a run: effective batch and lr, accumulation, warm-up in steps.

    `hp` is a typed hparams model (bobkit.manifest.hparams). `train_images` (per epoch) gives updates per
    epoch and warm-up steps; without it those are omitted. Detection warms up in iterations
    (`warmup_iters`); classification in epochs, stepped per epoch (fine-tune) or per update (probe)."""
    accum = accumulation(hp.per_gpu_batch, hp.batch_size, world_size)
    out: dict[str, Any] = {
        "world_size": world_size, "per_gpu_batch": hp.per_gpu_batch, "accumulation": accum,
        "effective_batch": hp.per_gpu_batch * world_size * accum,
        "effective_lr": effective_lr(hp.lr, hp.batch_size, getattr(hp, "lr_scaling", "absolute")),
    }
    epochs = getattr(hp, "epochs", None)
    if train_images is not None and epochs is not None:
        updates = train_images // out["effective_batch"]
        out["updates_per_epoch"] = updates
        out["total_updates"] = updates * epochs
    if hasattr(hp, "warmup_iters"):
        out.update(warmup_steps=hp.warmup_iters, warmup_unit="iterations")
    elif hasattr(hp, "warmup_epochs"):
        if per_update_schedule and "updates_per_epoch" in out:
            out.update(warmup_steps=int(round(hp.warmup_epochs * out["updates_per_epoch"])), warmup_unit="updates")
        else:
            out.update(warmup_steps=int(round(hp.warmup_epochs)), warmup_unit="epochs")
    return out


PER_UPDATE_PROTOCOLS = frozenset({"linear_probe"})  # the MAE-style probe steps its lr every update


def per_update_schedule(protocol: str) -> bool:
    """Fine-tuning steps the schedule per epoch (timm train.py); the linear probe per update."""
    return protocol in PER_UPDATE_PROTOCOLS


SUBSET_FRACTION = {"1pct": 0.01, "10pct": 0.1}


def train_images(dataset_spec: dict[str, Any], hp: Any) -> int | None:
    """Training images per epoch from the dataset manifest (after a 1 %/10 % subset or train_fraction);
    None when the manifest does not count them or the run does not train."""
    split = (dataset_spec.get("splits") or {}).get("train") or {}
    images = split.get("images") if isinstance(split, dict) else None
    if not images or getattr(hp, "epochs", None) is None:
        return None
    fraction = getattr(hp, "train_fraction", None) or SUBSET_FRACTION.get(getattr(hp, "subset", None) or "", 1.0)
    return int(images * fraction)

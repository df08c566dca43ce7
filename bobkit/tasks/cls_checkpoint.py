"""Checkpoints of a classification run, written atomically so a kill never leaves half a file.

checkpoints/last.pt   everything a resumed run needs (model, optimizer, scheduler, scaler, epoch,
                      RNG states, per-epoch history, the best epoch so far); rewritten every epoch.
                      Once final.pt exists it shrinks to a marker (history, no weights): a finished
                      run keeps one copy of its weights, and a kill before metrics.json costs nothing
checkpoints/best-<epoch>.pt  the best epoch's model weights while training runs; written before
                      last.pt, and older ones removed after it, so the one last.pt names always exists
checkpoints/final.pt  {"model", "num_classes", "backbone", "head", "drop", "resolution", "epoch",
                      "classes"}: the classifier the OOD evaluator and others read (the best epoch's
                      weights, as the authors select); cls_model.load_classifier rebuilds it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
FINAL = "final.pt"


def best_path(checkpoints: Path, epoch: int) -> Path:
    return checkpoints / f"best-{epoch}.pt"


def prune_best(checkpoints: Path, keep_epoch: int | None) -> None:
    """Remove best-<epoch>.pt files other than the one last.pt names (a kill can leave a newer one)."""
    for p in checkpoints.glob("best-*.pt"):
        if keep_epoch is None or p.name != best_path(checkpoints, keep_epoch).name:
            p.unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path) -> None:
    from bobkit.results import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path) -> dict[str, Any]:
    """A run checkpoint: RNG and optimizer states beside tensors, so the restricted unpickler (a file
    planted in a shared runs folder can run nothing)."""
    from bobkit import safe_pickle

    return safe_pickle.load(path)


def finished_marker(run_id: str, epoch: int, history: list, best: dict, best_epoch: int) -> dict[str, Any]:
    return {"run_id": run_id, "finished": True, "epoch": epoch, "history": history, "best": best,
            "best_epoch": best_epoch}


def finished_state(checkpoints: Path, run_id: str) -> dict[str, Any] | None:
    """The finished marker when training is over (final.pt written and last.pt shrunk), else None."""
    last, final = checkpoints / LAST, checkpoints / FINAL
    if not (final.is_file() and last.is_file()):
        return None
    state = load(last)
    return state if state.get("run_id") == run_id and state.get("finished") else None


def final_checkpoint(state_dict: dict[str, Any], *, num_classes: int, backbone: str, head: str, epoch: int,
                     drop: float = 0.0, resolution: int | None = None, classes: list[str] | None = None) -> dict[str, Any]:
    return {"model": state_dict, "num_classes": num_classes, "backbone": backbone, "head": head, "drop": drop,
            "resolution": resolution, "epoch": epoch, "classes": classes}

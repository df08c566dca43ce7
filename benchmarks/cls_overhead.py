"""Overhead of bobkit's fine-tuning step against a bare timm training loop (target: ratio >= 0.97).

Both sides train the same timm model on the same in-memory batches with the same recipe pieces
(AdamW with layer-wise decay from create_optimizer_v2, cosine schedule stepped per update, Mixup/CutMix,
SoftTargetCrossEntropy): the bare loop is the few lines a timm user writes; bobkit's side is
cls_train.Fit's epoch loop with its classifier (zoo backbone + head), gradient accumulation,
loss bookkeeping and runtime settings (deterministic mode on a CPU). Data loading is left out on
both sides. Each measurement runs in its own process, alternating sides, and the medians are compared.

    python benchmarks/cls_overhead.py                      # resnet18, 64 px, batch 32, CPU
    python benchmarks/cls_overhead.py --model convnext_tiny --resolution 96 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HP = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75, warmup_lr=1e-4, min_lr=1e-6,
          warmup_epochs=1, epochs=3, schedule="cosine", mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5,
          mixup_mode="batch", label_smoothing=0.1, lr_scaling="absolute", reprob=0.0, drop_path=0.1)


def batches(n: int, batch: int, res: int, classes: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, res, res, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n)]


def bare(args) -> float:
    """A timm user's loop: create_model, create_optimizer_v2, create_scheduler_v2, Mixup, backward, step."""
    import timm
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    torch.manual_seed(0)
    data = batches(args.warmup + args.steps, args.batch, args.resolution, args.classes)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.classes, drop_path_rate=0.1)
    opt = create_optimizer_v2(model, opt="adamw", lr=HP["lr"], weight_decay=HP["weight_decay"],
                              layer_decay=HP["layer_decay"])
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=HP["epochs"], warmup_epochs=1,
                                   warmup_lr=HP["warmup_lr"], min_lr=HP["min_lr"], step_on_epochs=False,
                                   updates_per_epoch=len(data))
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=args.classes)
    loss_fn = SoftTargetCrossEntropy()
    model.train()
    start = cpu = None
    for i, (x, y) in enumerate(data):
        if i == args.warmup:
            start, cpu = time.perf_counter(), time.process_time()
        x, y = mixup(x, y)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step_update(num_updates=i + 1)
        loss.item()
    return rates(args, start, cpu)


def rates(args, start: float, cpu: float) -> dict[str, float]:
    """images/s of wall time, and per CPU-second of this process (steadier on a shared host)."""
    images = args.steps * args.batch
    return {"wall": images / (time.perf_counter() - start), "cpu": images / (time.process_time() - cpu)}


class _Batches:
    """What Fit expects of its training batches: set_epoch() and a loader to iterate."""

    def __init__(self, data):
        self.loader = data

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.loader)


def bobkit(args) -> float:
    """cls_train.Fit's epoch loop on a zoo-built classifier, with bobkit's runtime settings."""
    sys.path.insert(0, str(REPO))
    import torch

    from bobkit.manifest.hparams import ClassificationHparams
    from bobkit.tasks import cls_runtime
    from bobkit.tasks.cls_model import Classifier, make_head, trainable_param_groups
    from bobkit.tasks.cls_train import Fit, make_loss, make_mixup, make_optimizer, make_scheduler

    hp = ClassificationHparams(**HP, batch_size=args.batch, per_gpu_batch=args.batch, seed=0, amp=False)
    rt = cls_runtime.start(hp)
    torch.manual_seed(0)
    data = batches(args.warmup + args.steps, args.batch, args.resolution, args.classes)
    backbone = _backbone(args)
    model = Classifier(backbone, make_head(backbone.num_features, args.classes, batchnorm=False, init="xavier_normal"))
    opt = make_optimizer(trainable_param_groups(model, HP["weight_decay"], HP["layer_decay"]), hp)
    sched = make_scheduler(opt, hp, len(data), per_update=True)
    mixup = make_mixup(hp, args.classes, False)
    fit = Fit(model=model, param_groups=[], train=_Batches(data[: args.warmup]), evaluate=lambda m: {}, hp=hp, rt=rt,
              checkpoints=Path("."), run_id="bench", num_classes=args.classes)
    loss_fn = make_loss(hp, mixup, False)
    fit._train_epoch(model, model, opt, sched, None, mixup, loss_fn, 0, 1, args.warmup)
    fit.train = _Batches(data[args.warmup:])
    start, cpu = time.perf_counter(), time.process_time()
    fit._train_epoch(model, model, opt, sched, None, mixup, loss_fn, 1, 1, args.steps)
    return rates(args, start, cpu)


def _backbone(args):
    """The same timm network as the bare side, as the feature extractor bobkit's zoo returns (no head)."""
    import timm

    return timm.create_model(args.model, pretrained=False, num_classes=0, drop_path_rate=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--side", choices=["bare", "bobkit"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps({"images_per_s": bare(args) if args.side == "bare" else bobkit(args)}))
        return
    results: dict[str, list[dict[str, float]]] = {"bare": [], "bobkit": []}
    base = [sys.executable, __file__] + [a for a in sys.argv[1:]]
    for r in range(args.rounds):
        for side in (("bare", "bobkit") if r % 2 == 0 else ("bobkit", "bare")):
            out = subprocess.run(base + ["--side", side], capture_output=True, text=True, check=True)
            results[side].append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])
            got = results[side][-1]
            print(f"round {r + 1} {side:>6}: {got['wall']:8.1f} images/s wall, {got['cpu']:8.1f} per CPU-s", flush=True)
    print(f"\n{args.model} {args.resolution}px batch {args.batch}, CPU, {args.steps} steps x {args.rounds} rounds (medians)")
    for clock in ("wall", "cpu"):
        med = {k: statistics.median(r[clock] for r in v) for k, v in results.items()}
        ratio = med["bobkit"] / med["bare"]
        unit = "images/s" if clock == "wall" else "images per CPU-second"
        print(f"{clock:>4}: bare {med['bare']:8.1f}  bobkit {med['bobkit']:8.1f} {unit}  ratio {ratio:.3f}  "
              f"(target >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")

if __name__ == "__main__":
    main()

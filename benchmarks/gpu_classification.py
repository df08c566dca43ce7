"""GPU fine-tuning throughput: bobkit's settings against the authors', same model and batch (target >= 1.5x on an H100).

  authors' : fp16 autocast + GradScaler, NCHW (torch native AMP as timm 0.6.12's train.py uses it)
  bobkit   : bf16 autocast (no loss scaling), channels_last, fused AdamW where available
  bobkit+c : the same under torch.compile (with --compile)

Everything else is equal: AdamW with layer-wise decay (timm's create_optimizer_v2), SoftTargetCrossEntropy,
synthetic tensors already on the GPU (no data loading), drop path 0.1. Standalone: needs only torch
and timm. Prints images/s per model and setting, the speed-up, and the card's name.

    python benchmarks/gpu_classification.py                       # the three BoB models, batch 64
    python benchmarks/gpu_classification.py --compile --steps 30
    python benchmarks/gpu_classification.py --device cpu --steps 1 --warmup 0 --batch 2   # dry check
"""

from __future__ import annotations

import argparse
import json
import time

MODELS = [("convnext_base", 224), ("vit_base_patch16_224", 224), ("swinv2_base_window8_256", 256)]


def measure(name: str, res: int, setting: str, args) -> float:
    import timm
    import torch
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000, drop_path_rate=0.1).to(device)
    channels_last = setting != "authors"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    extra = {"fused": True} if (cuda and setting != "authors") else {}
    try:
        opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75, **extra)
    except TypeError:
        opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    dtype = torch.float16 if setting == "authors" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type) if (setting == "authors" and cuda) else None
    step_model = torch.compile(model) if setting == "bobkit+compile" else model
    loss_fn = SoftTargetCrossEntropy()
    x = torch.randn(args.batch, 3, res, res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.softmax(torch.randn(args.batch, 1000, device=device), dim=1)
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=cuda or args.cpu_amp):
            loss = loss_fn(step_model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also measure bobkit's settings under torch.compile")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu (dry check)")
    ap.add_argument("--cpu-amp", action="store_true", help="autocast on CPU too (dry check of the AMP paths)")
    ap.add_argument("--models", nargs="*", help="subset of: " + ", ".join(m for m, _ in MODELS))
    ap.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = ap.parse_args()
    import timm
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    settings = ["authors", "bobkit"] + (["bobkit+compile"] if args.compile else [])
    models = [(m, r) for m, r in MODELS if not args.models or m in args.models]
    print(f"device: {card} · torch {torch.__version__} · timm {timm.__version__} · batch {args.batch} · "
          f"{args.steps} timed steps after {args.warmup} warm-up", flush=True)
    rows = []
    for name, res in models:
        rates = {}
        for s in settings:
            t0 = time.perf_counter()
            rates[s] = measure(name, res, s, args)
            if args.device == "cuda":
                torch.cuda.empty_cache()
            print(f"  {name:<26} {s:<15} {rates[s]:9.1f} images/s  ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append({"model": name, "resolution": res, **rates})
    header = f"{'model':<26} {'res':>4} " + " ".join(f"{s:>15}" for s in settings) + f" {'speed-up':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        best = max(r[s] for s in settings if s != "authors")
        print(f"{r['model']:<26} {r['resolution']:>4} " + " ".join(f"{r[s]:>15.1f}" for s in settings)
              + f" {best / r['authors']:>8.2f}x")
    print(f"(images/s on {card}; speed-up = best bobkit setting / authors'; target >= 1.5x on an H100)")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"device": card, "batch": args.batch, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()

"""Linear probe wall time with the feature cache / without it, same epochs (target: ratio <= 0.1).

Both runs are the `linear_probe` recipe of the manifests on the same synthetic ImageNet stand-in,
through the real runner (bobkit.tasks.classification.run), with a randomly initialised backbone:
the uncached probe runs the frozen backbone over augmented images every epoch (as the authors do);
the cached one extracts features once and trains the BatchNorm + linear head on them. Each run is
timed in its own process, from the runner's call to its return; the imports and the synthetic data
(the same on both sides, and paid once per run whatever the epochs) are done before the clock starts.

    python benchmarks/linear_probe_cache.py                          # dino_vit_small, 64 px, 30 epochs
    python benchmarks/linear_probe_cache.py --backbone resnet50 --epochs 90
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(args, cached: bool) -> dict:
    sys.path.insert(0, str(REPO))
    from bobkit.exec.base import prepare
    from bobkit.manifest.loader import load_catalog
    from bobkit.plan import RunSpec, run_id, spec_for
    from bobkit.tasks.classification import run

    catalog = load_catalog()
    spec = spec_for(catalog, "bench", catalog.recipes["linear_probe"], catalog.backbones[args.backbone],
                    catalog.datasets["imagenet"], lr=None, seed=0, smoke=True, faithful=False)
    body = spec.model_dump(mode="json", exclude={"id"})
    body["hparams"].update(epochs=args.epochs, warmup_epochs=min(10, args.epochs // 3), feature_cache=cached,
                           resolution=args.resolution, batch_size=args.batch, per_gpu_batch=args.batch)
    spec = RunSpec(id=run_id(body), **body)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = prepare(spec, Path(tmp) / "runs")
        import importlib

        from bobkit.data.synthetic import write_synthetic

        for module in ("timm", "bobkit.tasks.cls_train", "bobkit.tasks.cls_probe", "bobkit.tasks.cls_model"):
            importlib.import_module(module)  # import costs are not the probe's

        write_synthetic(spec.dataset_spec, run_dir.path / "synthetic" / spec.dataset)
        start = time.perf_counter()
        metrics = run(spec, run_dir, Path(tmp) / "data")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "top1": metrics["top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dino_vit_small")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--side", choices=["cached", "uncached"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(one_run(args, args.side == "cached")))
        return
    res = {}
    for side in ("uncached", "cached"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{side:>8}: {res[side]['seconds']:7.1f} s  (top1 {res[side]['top1']:.3f})", flush=True)
    ratio = res["cached"]["seconds"] / res["uncached"]["seconds"]
    print(f"\n{args.backbone} {args.resolution}px, {args.epochs} epochs, batch {args.batch}, synthetic ImageNet stand-in, CPU")
    print(f"ratio cached / uncached = {ratio:.3f}  (target <= 0.1: {'met' if ratio <= 0.1 else 'NOT met'})")


if __name__ == "__main__":
    main()

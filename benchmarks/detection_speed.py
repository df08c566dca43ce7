"""Detection training speed and peak memory: iterations/s of the generated mmdet config.

    .venv-det/bin/python benchmarks/detection_speed.py                 # CPU, smoke config (64 px)
    .venv-det/bin/python benchmarks/detection_speed.py --device cuda   # GPU, the recipe's resolution

Each backbone's run is planned from the real manifests (COCO Cascade Mask R-CNN, fine-tuned, lr 1e-4),
with random-init weights and synthetic COCO images; the model, optimizer and AMP setting are the
recipe's. A few batches are loaded first, so the timing is the model's training step (forward,
backward, optimizer) and not data loading. Prints one row per backbone (or JSON with --json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_spec(catalog, backbone: str, device: str, resolution: int | None):
    from bobkit.plan import plan

    smoke = device == "cpu"
    spec = next(s for s in plan(catalog, "detection", backbones=[backbone], smoke=smoke)
                if s.recipe == "coco_finetune" and (smoke or s.hparams["lr"] == 1e-4))
    hp = {**spec.hparams, "pretrained": False}
    if resolution:
        hp["resolution"] = resolution
    return spec.model_copy(update={"hparams": hp, "dataset_spec": {**spec.dataset_spec, "synthetic": True}})


def write_images(run_dir, spec, size: int, count: int) -> None:
    """Synthetic COCO of `size`-pixel images, placed where the runner looks for the smoke data."""
    from bobkit.data.coco import SYNTHETIC_IMAGES, split_names, write_coco_split
    from bobkit.data.synthetic import DONE_MARKER

    root = run_dir.path / "synthetic" / spec.dataset_spec["id"]
    train, evaluate = split_names(spec.dataset_spec)
    write_coco_split(root, train, num_images=count, size=size)
    write_coco_split(root, evaluate, num_images=SYNTHETIC_IMAGES["eval"], size=size)
    (root / DONE_MARKER).write_text("benchmark\n")


def measure(spec, device: str, iters: int, warmup: int, image_size: int, workdir: Path) -> dict:
    import torch

    from bobkit.results import RunDir
    from bobkit.tasks.detection.job import prepare_job
    from bobkit.tasks.detection.mmdet_engine import MmdetEngine

    run_dir = RunDir(workdir / spec.id)
    batch = spec.hparams["per_gpu_batch"]
    write_images(run_dir, spec, image_size, count=batch * 4)
    job = prepare_job(spec, run_dir, workdir)
    engine = MmdetEngine()
    engine.check()
    runner = engine.build_runner(job)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    model = runner.model
    model.train()
    loader = runner.build_dataloader(runner._train_dataloader)
    batches = list(itertools.islice(loader, 4))
    cycle = itertools.cycle(batches)
    runner.optim_wrapper.initialize_count_status(model, 0, warmup + iters)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        model.train_step(next(cycle), optim_wrapper=runner.optim_wrapper)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        model.train_step(next(cycle), optim_wrapper=runner.optim_wrapper)
    sync()
    seconds = time.perf_counter() - start
    shape = tuple(model.data_preprocessor(next(cycle), True)["inputs"].shape[-2:])
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"backbone": spec.backbone, "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "resolution": spec.hparams["resolution"], "pipeline": spec.hparams["train_pipeline"],
            "input_hw": shape, "per_gpu_batch": batch, "amp": spec.hparams["amp"],
            "iters_per_s": iters / seconds, "images_per_s": iters * batch / seconds,
            "peak_memory_gib": peak / 2**30, "peak_memory_kind": "cuda allocated" if device == "cuda" else "process RSS",
            "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backbone", action="append", help="backbone ids (default: resnet50, vit_small_in1k)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 10 cpu, 30 cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2 cpu, 10 cuda)")
    parser.add_argument("--resolution", type=int, default=None, help="override the spec's resolution")
    parser.add_argument("--image-size", type=int, default=None, help="synthetic image side (default 64 cpu, 640 cuda)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    iters = args.iters or (30 if gpu else 10)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 2)
    image_size = args.image_size or (640 if gpu else 64)

    from bobkit.manifest.loader import load_catalog

    catalog = load_catalog()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bobkit-det-bench-") as tmp:
        for backbone in args.backbone or ["resnet50", "vit_small_in1k"]:
            spec = bench_spec(catalog, backbone, args.device, args.resolution)
            rows.append(measure(spec, args.device, iters, warmup, image_size, Path(tmp)))
            if gpu:
                import torch

                torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'backbone':<18} {'device':<6} {'pipeline':<16} {'input':<11} {'batch':>5} {'amp':>5} "
              f"{'iter/s':>8} {'img/s':>8} {'peak GiB':>9}")
        for r in rows:
            print(f"{r['backbone']:<18} {r['device']:<6} {r['pipeline']:<16} {str(r['input_hw']):<11} "
                  f"{r['per_gpu_batch']:>5} {str(r['amp']):>5} {r['iters_per_s']:>8.3f} {r['images_per_s']:>8.2f} "
                  f"{r['peak_memory_gib']:>9.2f}")
        if rows and rows[0]["gpu"]:
            print(f"GPU: {rows[0]['gpu']}")
        else:
            print(f"CPU threads: {rows[0]['threads'] if rows else '?'}; peak memory is the process's peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

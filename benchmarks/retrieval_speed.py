"""Retrieval speed on this machine: feature extraction (images/s) and exact search time vs database size.

    python benchmarks/retrieval_speed.py                      # defaults: resnet18 on CPU, 10^3..10^6 vectors
    python benchmarks/retrieval_speed.py --max-db 100000 --queries 200 --extract-images 128

Extraction goes through the retrieval runner's own path (JPEG decode, bicubic resize, centre crop,
normalisation, the backbone's pooled features, L2 normalisation) on synthetic images in a temp
folder. Search compares faiss's flat inner-product index with numpy brute force (matmul +
argpartition / argsort) for top-k search and for the full ranking the metrics need; numpy is
capped where its score matrix would exceed --numpy-memory-gb.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_extraction(model_name: str, n_images: int, resolution: int, batch: int, threads: int | None) -> dict:
    import timm
    import torch

    from bobkit.data.synthetic import class_image, save_image
    from bobkit.tasks.cls_runtime import Runtime
    from bobkit.tasks.retrieval import extract, retrieval_transform

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n_images):
            p = Path(tmp) / f"{i:05d}.jpg"
            save_image(class_image(i % 10, i, num_classes=10, size=(375, 500)), p)
            paths.append(p)
        model = timm.create_model(model_name, pretrained=False, num_classes=0).eval()
        transform = retrieval_transform({"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                                        resolution=resolution, resize=None, normalization="backbone")
        rt = Runtime(device=torch.device("cpu"))
        extract(model, paths[: min(batch, n_images)], transform, rt, batch, "warm-up")
        start = time.perf_counter()
        feats = extract(model, paths, transform, rt, batch, "benchmark")
        seconds = time.perf_counter() - start
    return {"model": model_name, "images": n_images, "resolution": resolution, "dim": feats.shape[1],
            "seconds": seconds, "images_per_s": n_images / seconds, "threads": torch.get_num_threads()}


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_search(sizes: list[int], dim: int, n_queries: int, k: int, numpy_gb: float, full_rank_max: int) -> list[dict]:
    from bobkit.search import InnerProductIndex, brute_force_search, faiss_available, l2_normalize

    rng = np.random.default_rng(0)
    queries = l2_normalize(rng.standard_normal((n_queries, dim), dtype=np.float32))
    rows = []
    for n in sizes:
        db = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 100_000):  # chunked, so the peak stays near one copy of the database
            db[start:start + 100_000] = l2_normalize(rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32))
        row: dict = {"n": n}
        if faiss_available():
            start = time.perf_counter()
            index = InnerProductIndex(db, backend="faiss")
            row["faiss_build_s"] = time.perf_counter() - start
            row["faiss_topk_s"] = _timed(lambda: index.search(queries, k), repeat=2)
            if n <= full_rank_max:
                row["faiss_full_s"] = _timed(lambda: list(index.rank(queries)))
        fits = n_queries * n * 4 * 3 <= numpy_gb * 2**30  # scores + partition/argsort work arrays
        if fits:
            row["numpy_topk_s"] = _timed(lambda: brute_force_search(queries, db, k), repeat=2)
            if n <= full_rank_max:
                row["numpy_full_s"] = _timed(lambda: brute_force_search(queries, db, n))
        if "faiss_topk_s" in row and "numpy_topk_s" in row:
            _, f_ids = index.search(queries[:8], k)
            _, b_ids = brute_force_search(queries[:8], db, k)
            row["same_neighbours"] = bool(np.array_equal(f_ids, b_ids))
        rows.append(row)
        del db
    return rows


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="timm model for the extraction benchmark")
    ap.add_argument("--extract-images", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--max-db", type=int, default=1_000_000)
    ap.add_argument("--full-rank-max", type=int, default=100_000, help="largest database ranked in full")
    ap.add_argument("--numpy-memory-gb", type=float, default=2.0)
    ap.add_argument("--skip-extraction", action="store_true")
    args = ap.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    if not args.skip_extraction:
        r = bench_extraction(args.model, args.extract_images, args.resolution, args.batch, args.threads)
        print(f"\nfeature extraction ({r['model']}, pretrained=False, {r['resolution']} px, CPU, "
              f"{r['threads']} threads): {r['images']} images in {r['seconds']:.1f} s = "
              f"{r['images_per_s']:.1f} images/s (dim {r['dim']})")

    sizes = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_db]
    rows = bench_search(sizes, args.dim, args.queries, args.k, args.numpy_memory_gb, args.full_rank_max)
    cols = ["n", "faiss_build_s", "faiss_topk_s", "numpy_topk_s", "faiss_full_s", "numpy_full_s", "same_neighbours"]
    print(f"\nexact search, {args.queries} queries, {args.dim}-d, top-{args.k} and full ranking "
          f"(seconds, best of runs; — = skipped)")
    print(" | ".join(f"{c:>15}" for c in cols))
    for row in rows:
        print(" | ".join(f"{_fmt(row.get(c)):>15}" for c in cols))


if __name__ == "__main__":
    main()

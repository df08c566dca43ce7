"""How fast is `bobkit verify`, and does it stay free of torch? Target: under one second.

Writes a full synthetic result set for the retrieval experiment (one finished run directory per
planned run, metrics = the published MRR plus a little deterministic noise), then times:
  1. `bobkit verify --published-only --json` (every published cell checked for consistency),
  2. `bobkit verify RUNS --json` over every published cell with the synthetic runs,
  3. `bobkit verify RUNS` as a person reads it (the terminal listing),
each as a user runs it (a fresh process, wall time) and in-process (after imports), and reports which
heavy modules the verify process imported.

    python benchmarks/verify_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from bobkit.cli_app import main
sys.argv = ["bobkit", "verify", *sys.argv[1:]]
code = 0
out = sys.stdout
sys.stdout = open("/dev/null", "w")
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
sys.stdout = out
heavy = [m for m in ("torch", "timm", "matplotlib", "scipy.stats", "pandas", "pyarrow") if m in sys.modules]
print(json.dumps({"seconds": time.perf_counter() - t0, "exit": code, "heavy": heavy}))
"""


def write_synthetic_runs(runs_dir: Path, experiment: str = "retrieval") -> int:
    from bobkit.manifest.loader import load_catalog
    from bobkit.plan import plan
    from bobkit.results import RunDir, add_to_index, atomic_write_json

    catalog = load_catalog()
    published = {(p.backbone, p.dataset, p.metric): p.value for p in catalog.published
                 if p.experiment == experiment and p.unit == "fraction"}
    rng = random.Random(0)
    n = 0
    specs = plan(catalog, experiment)
    for spec in specs:
        run = RunDir.of(runs_dir, spec.id)
        run.write_spec(spec.model_dump(mode="json"))
        base = published.get((spec.backbone, spec.dataset, "mrr"), rng.uniform(0.2, 0.9))
        metrics = {"mrr": min(1.0, max(0.0, base + rng.gauss(0, 0.0005))), "map": rng.uniform(0.1, 0.8),
                   "precision@1": rng.uniform(0.1, 0.9), "recall@5": rng.uniform(0.1, 0.9)}
        atomic_write_json(run.metrics_path, {"run_id": spec.id, "experiment": experiment, "backbone": spec.backbone,
                                             "dataset": spec.dataset, "recipe": spec.recipe, "task": spec.task,
                                             "smoke": False, "metrics": metrics, "provenance": {"benchmark": True}})
        n += 1
    add_to_index(runs_dir, experiment, [s.id for s in specs])
    return n


def time_cli(args: list[str], repeat: int) -> dict:
    """Wall time, and CPU time (user + sys), which a busy shared machine distorts far less."""
    import resource

    walls, cpus, inner, last = [], [], [], {}
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"probe failed: {proc.stderr[-2000:]}")
        last = json.loads(proc.stdout.strip().splitlines()[-1])
        inner.append(last["seconds"])
    return {"wall_s_median": statistics.median(walls), "wall_s_min": min(walls), "cpu_s_median": statistics.median(cpus),
            "in_process_s_median": statistics.median(inner), "exit": last["exit"], "heavy_imports": last["heavy"]}


def time_in_process(runs_dir: Path, repeat: int) -> dict:
    from bobkit.manifest.loader import load_catalog
    from bobkit.results import finished_results
    from bobkit.verify import check_published, verify

    out = {}
    for name, fn in (("load_catalog", lambda: load_catalog()),):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        out[name] = (time.perf_counter() - t0) / repeat
    catalog = load_catalog()
    t0 = time.perf_counter()
    for _ in range(repeat):
        rows = finished_results(runs_dir)
    out["finished_results"] = (time.perf_counter() - t0) / repeat
    t0 = time.perf_counter()
    for _ in range(repeat):
        report = verify(catalog, rows)
    out["verify"] = (time.perf_counter() - t0) / repeat
    t0 = time.perf_counter()
    for _ in range(repeat):
        check_published(catalog)
    out["check_published"] = (time.perf_counter() - t0) / repeat
    out["counts"] = report.counts()
    out["runs"] = len(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bobkit-verify-bench-") as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.perf_counter()
        n = write_synthetic_runs(runs)
        print(f"wrote {n} synthetic retrieval runs in {time.perf_counter() - t0:.2f} s")
        env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        print(env_note)
        published_only = time_cli(["--published-only", "--json"], args.repeat)
        full = time_cli([str(runs), "--json"], args.repeat)
        listing = time_cli([str(runs)], args.repeat)
        parts = time_in_process(runs, args.repeat)
    result = {"published_only_cli": published_only, "verify_cli": full, "verify_cli_listing": listing,
              "in_process": parts}
    print(json.dumps(result, indent=2))
    heavy = set(full["heavy_imports"]) | set(listing["heavy_imports"])
    print(f"no torch imported: {not {'torch', 'timm'} & heavy}")
    worst = max(full["wall_s_median"], listing["wall_s_median"])
    print(f"target < 1 s wall: {'met' if worst < 1.0 else 'NOT met'} (median wall: --json {full['wall_s_median']:.2f} s, "
          f"listing {listing['wall_s_median']:.2f} s)")


if __name__ == "__main__":
    main()

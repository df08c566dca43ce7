"""Makespan of the GPU packing scheduler on a simulated machine, against the lower bound.

    python benchmarks/scheduler_makespan.py [--experiment table2] [--gpus 8]

Each run takes exactly the plan's estimate (gpu_hours / gpus hours on its GPUs). Lower bound =
max(total GPU-hours / GPUs, the longest run). Target: makespan / lower bound <= 1.05.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from bobkit.exec.scheduler import jobs_from_specs, simulate
from bobkit.manifest.loader import load_catalog
from bobkit.plan import plan

TARGET = 1.05


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="table2")
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    specs = plan(load_catalog(()), args.experiment)
    jobs = jobs_from_specs(specs)
    t0 = time.perf_counter()
    sim = simulate(jobs, args.gpus)
    took = time.perf_counter() - t0
    sizes = Counter(min(j.gpus, args.gpus) for j in jobs)
    print(f"experiment {args.experiment}: {len(jobs)} runs ({', '.join(f'{n}x {g} GPU' for g, n in sorted(sizes.items()))}), "
          f"{sum(j.gpu_hours for j in jobs):,.0f} GPU-hours, {sum(1 for j in jobs if j.depends_on)} with an upstream run")
    print(f"machine: {args.gpus} simulated GPUs")
    print(f"makespan      {sim.makespan:12,.1f} h")
    print(f"lower bound   {sim.lower_bound:12,.1f} h")
    print(f"ratio         {sim.ratio:12.4f}   (target <= {TARGET})")
    print(f"GPUs busy     {sim.busy_fraction:12.2%}")
    print(f"scheduler time {took:.2f} s")
    return 0 if sim.ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())

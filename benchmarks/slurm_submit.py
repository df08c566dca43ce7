"""Submission overhead of the Slurm executor: time from `reproduce` to every task queued, and sbatch calls.

A 100-run smoke plan (table2's grid, enough backbones for 100 runs, both image families and
upstream/downstream runs) is handed to SlurmExecutor against the running cluster, with the jobs
held (`sbatch --hold`) so nothing starts; the clock stops when squeue lists all 100 array tasks.
sbatch calls are counted by a logging shim in front of the real sbatch on PATH. A second
`reproduce` of the same plan (everything already queued) must make no sbatch call. For
comparison, the same number of one-run jobs is submitted with one sbatch call each. All jobs are
cancelled at the end.

The same plan is also submitted through the command line (`bobkit reproduce EXPERIMENT --smoke
--backbone ... --executor slurm`, Python start-up and planning included); its run count is that of
the whole grid for those backbones.

    python benchmarks/slurm_submit.py [--runs 100] [--experiment table2] [--no-baseline] [--no-cli]

Needs a Slurm cluster (`bash .ci/setup-slurm.sh` starts one on this machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def smoke_plan(experiment: str, runs: int):
    from bobkit.manifest.loader import load_catalog
    from bobkit.plan import plan
    from bobkit.exec.base import order_by_dependencies

    catalog = load_catalog()
    exp = catalog.experiments[experiment]
    backbones = sorted({b for g in exp.grid for b in g.backbones})
    chosen: list[str] = []
    specs = []
    for b in backbones:
        chosen.append(b)
        specs = plan(catalog, experiment, smoke=True, backbones=chosen)
        if len(specs) >= runs:
            break
    return order_by_dependencies(specs)[:runs], chosen


def sbatch_shim(folder: Path) -> Path:
    real = shutil.which("sbatch")
    if real is None:
        sys.exit("sbatch not found: start a cluster with `bash .ci/setup-slurm.sh`")
    log = folder / "sbatch-calls.log"
    shim = folder / "bin" / "sbatch"
    shim.parent.mkdir(parents=True)
    shim.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    return log


def queued(job_prefixes: set[str]) -> int:
    out = subprocess.run(["squeue", "--array", "--noheader", "--format=%i"], capture_output=True, text=True).stdout
    return sum(1 for line in out.split() if line.split("_")[0] in job_prefixes)


def wait_queued(jobs: set[str], n: int, timeout: float = 120) -> None:
    prefixes = {j.split("_")[0] for j in jobs}
    end = time.monotonic() + timeout
    while queued(prefixes) < n:
        if time.monotonic() > end:
            raise SystemExit(f"only {queued(prefixes)} of {n} tasks appeared in squeue after {timeout} s")
        time.sleep(0.05)


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.is_file() else 0


def baseline_one_sbatch_per_run(n: int, folder: Path) -> tuple[float, list[str]]:
    ids = []
    t0 = time.perf_counter()
    for i in range(n):
        out = subprocess.run(["sbatch", "--hold", "--parsable", f"--output={folder}/b{i}.out", "--wrap", "true"],
                             capture_output=True, text=True, check=True).stdout.strip()
        ids.append(out.split(";")[0])
    wait_queued(set(ids), n)
    return time.perf_counter() - t0, ids


def through_cli(experiment: str, backbones: list[str], folder: Path, log: Path) -> tuple[float, int, int, set[str]]:
    from bobkit.exec.slurm import read_record
    from bobkit.results import iter_runs

    cfg = folder / "slurm.toml"
    cfg.write_text('[slurm]\ncontainer = "none"\ncpus_per_gpu = 1\nmem_per_gpu_gb = 1\n[slurm.sbatch]\nhold = true\n')
    runs = folder / "cli-runs"
    before = calls(log)
    argv = [sys.executable, "-m", "bobkit", "reproduce", experiment, "--smoke", "--executor", "slurm",
            "--slurm-config", str(cfg), "--runs-dir", str(runs), "--data-root", str(folder / "data"), "--json"]
    for b in backbones:
        argv += ["--backbone", b]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bobkit reproduce failed ({proc.returncode}): {proc.stderr[-2000:]}")
    jobs = {read_record(r).get("job_id") for r in iter_runs(runs, experiment)} - {None}
    wait_queued(jobs, len(jobs))
    return time.perf_counter() - t0, len(jobs), calls(log) - before, jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--experiment", default="table2")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-cli", action="store_true")
    args = ap.parse_args()

    from bobkit.exec.slurm import SlurmExecutor
    from bobkit.slurm_config import SlurmConfig

    specs, backbones = smoke_plan(args.experiment, args.runs)
    folder = Path(tempfile.mkdtemp(prefix="bobkit-slurm-bench-"))
    log = sbatch_shim(folder)
    os.environ["PATH"] = f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"
    cfg = SlurmConfig(container="none", cpus_per_gpu=1, mem_per_gpu_gb=1, sbatch={"hold": True})
    runs_dir, data = folder / "runs", folder / "data"
    data.mkdir()
    jobs: set[str] = set()
    try:
        t0 = time.perf_counter()
        report = SlurmExecutor(cfg, progress=False).execute(specs, runs_dir, data)
        t_return = time.perf_counter() - t0
        from bobkit.exec.slurm import read_record
        from bobkit.results import RunDir

        jobs = {read_record(RunDir(o.run_dir))["job_id"] for o in report.outcomes if o.state == "queued"}
        wait_queued(jobs, len(specs))
        t_queued = time.perf_counter() - t0
        first_calls = calls(log)
        families = sorted({(s.image_family, s.gpus, bool(s.depends_on)) for s in specs})

        t1 = time.perf_counter()
        again = SlurmExecutor(cfg, progress=False).execute(specs, runs_dir, data)
        t_again = time.perf_counter() - t1
        second_calls = calls(log) - first_calls

        print(f"plan: {len(specs)} smoke runs of {args.experiment} ({len(backbones)} backbones); "
              f"groups (family, gpus, has upstream): {families}")
        print(f"reproduce -> all {len(specs)} tasks in squeue: {t_queued:.2f} s "
              f"(execute() returned after {t_return:.2f} s; {1000 * t_queued / len(specs):.1f} ms/run)")
        print(f"sbatch calls: {first_calls} (one per array group)")
        print(f"second reproduce (all queued): {t_again:.2f} s, {second_calls} sbatch calls, "
              f"{again.count('queued')} runs reported queued")
        if not args.no_cli:
            t_cli, n_cli, cli_calls, cli_jobs = through_cli(args.experiment, backbones, folder, log)
            jobs |= cli_jobs
            print(f"bobkit reproduce {args.experiment} --smoke ({len(backbones)} backbones) --executor slurm: "
                  f"{n_cli} runs in squeue {t_cli:.2f} s after the command started, {cli_calls} sbatch calls")
        if not args.no_baseline:
            t_base, ids = baseline_one_sbatch_per_run(len(specs), folder)
            jobs |= set(ids)
            print(f"baseline, one sbatch per run: {t_base:.2f} s for {len(specs)} jobs, {len(specs)} sbatch calls")
    finally:
        prefixes = sorted({j.split("_")[0] for j in jobs})
        if prefixes:
            subprocess.run(["scancel", *prefixes], check=False)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

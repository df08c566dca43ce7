"""Slurm executor: one job array per (image family, GPUs per run) group, submitted with submitit.

Slurm schedules; bobkit only groups the runs, asks for resources from the RunSpecs' estimates,
and records each run's job id in its run directory (slurm.json; the state stays in status.json),
so a second `reproduce` submits only what is neither finished nor still in the queue. Each array task runs `bobkit run-one` in the family's
image (bobkit/exec/container_cmd.py builds the command line) and writes the same run directory
as the local and docker executors.

Preemption and time limits: submitit asks Slurm for USR2 before the limit; the task stops its
run (the runner resumes from checkpoints/last.pt) and requeues itself under the same job id.
"""

from __future__ import annotations

import getpass
import math
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from bobkit.errors import EnvironmentMissing
from bobkit.exec.base import ExecutionReport, RunOutcome, prepare_runs
from bobkit.exec.container_cmd import Launch, Mount
from bobkit.plan import RunSpec
from bobkit.results import RunDir, atomic_write_json
from bobkit.slurm_config import SlurmConfig, load_slurm_config, parse_slurm_time

LOG_FOLDER = ".slurm"  # submitit's pickles and per-task logs, under the runs directory
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"}
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
OVERHEAD_MIN = 10  # start-up, image load, evaluation: on top of the training estimate


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the queue (squeue)

def queue_states(user: str | None = None) -> dict[str, str]:
    """Job id (`123` or `123_4` for an array task) → Slurm state, for one user's jobs still known to Slurm."""
    if shutil.which("squeue") is None:
        raise EnvironmentMissing("squeue not found: run bobkit on a Slurm login node, or use --executor local")
    cmd = ["squeue", "--array", "--noheader", "--format=%i|%T", "--user", user or getpass.getuser()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnvironmentMissing(f"squeue failed: {msg[-1] if msg else proc.returncode}; "
                                 "is slurmctld up? (`scontrol ping`)")
    states: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if "|" in line:
            job, state = line.strip().split("|", 1)
            states[job] = state.strip()
    return states


def is_active(state: str | None) -> bool:
    return bool(state) and state not in TERMINAL


def job_state(job: str) -> str | None:
    """One job's state as slurmctld has it now (`scontrol show job`), None when it no longer knows it.

    squeue's listing is a snapshot; before a run is written off as failed, its job is asked about once
    more, so a job between two incarnations (a requeue) is never mistaken for a lost one.
    """
    try:
        proc = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for item in proc.stdout.split():
        if item.startswith("JobState="):
            return item.split("=", 1)[1]
    return None


# ---------------------------------------------------------------- what a run directory records

# status.json holds the run's state; `bobkit run-one` rewrites it as the run goes, so the Slurm
# bookkeeping (job id, attempts, logs) lives beside it in slurm.json, which only bobkit's Slurm
# code writes. Both are updated read-modify-write under one lock: submitter and task share them.
SLURM_RECORD = "slurm.json"
LOCK = ".slurm.lock"


def _lock(run: RunDir):
    from filelock import FileLock

    return FileLock(str(run.path / LOCK), timeout=60)


def _read(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_record(run: RunDir) -> dict[str, Any]:
    return _read(run.path / SLURM_RECORD)


def update_status(run: RunDir, **fields: Any) -> dict[str, Any]:
    """Merge fields into status.json (keeping what run-one wrote, e.g. its error)."""
    with _lock(run):
        current = run.status_record()
        current.update({k: v for k, v in fields.items() if v is not None})
        atomic_write_json(run.status_path, current)
        return current


def update_record(run: RunDir, **fields: Any) -> dict[str, Any]:
    with _lock(run):
        current = read_record(run)
        current.update({k: v for k, v in fields.items() if v is not None})
        atomic_write_json(run.path / SLURM_RECORD, current)
        return current


def slurm_job_of(run: RunDir) -> str | None:
    return read_record(run).get("job_id")


# ---------------------------------------------------------------- resources from the RunSpecs

@dataclass(frozen=True)
class Resources:
    gpus: int
    cpus: int
    mem_gb: float
    time_min: int


def time_limit_min(specs: Sequence[RunSpec], cfg: SlurmConfig) -> int:
    """The user's --slurm-time, or the longest estimate × margin + overhead, within [min, max]."""
    if cfg.time:
        return parse_slurm_time(cfg.time)
    hours = max((s.gpu_hours / max(s.gpus, 1) for s in specs), default=0.0)
    minutes = math.ceil(hours * 60 * cfg.time_margin) + OVERHEAD_MIN
    minutes = max(minutes, cfg.min_time_min)
    return min(minutes, cfg.max_time_min) if cfg.max_time_min else minutes


def resources_for(specs: Sequence[RunSpec], cfg: SlurmConfig) -> Resources:
    gpus = max(s.gpus for s in specs) if cfg.request_gpus else 0
    if gpus:
        cpus, mem = cfg.cpus_per_gpu * gpus, cfg.mem_per_gpu_gb * gpus
    else:
        cpus, mem = cfg.cpus_without_gpu, cfg.mem_without_gpu_gb
    return Resources(gpus=gpus, cpus=cpus, mem_gb=mem, time_min=time_limit_min(specs, cfg))


# ---------------------------------------------------------------- images and provenance

def sif_dir(cfg: SlurmConfig) -> Path:
    return Path(cfg.sif_dir).expanduser() if cfg.sif_dir else Path.home() / ".cache" / "bobkit" / "sif"


def default_image_ref(spec_image: str) -> str:
    """The spec's image (bobkit/FAMILY) at the tag `bobkit images build` gives it by default."""
    last = spec_image.rsplit("/", 1)[-1]
    return spec_image if (":" in last or "@" in last) else f"{spec_image}:latest"


def image_for(family: str, spec_image: str, cfg: SlurmConfig) -> tuple[str, dict[str, str]]:
    """(what the runtime runs, the provenance variables known at submission time)."""
    runtime = cfg.container
    if runtime == "none":
        return "", {}
    configured = cfg.images.get(family)
    if runtime == "apptainer":
        from bobkit.exec.sif import sif_provenance

        sif = Path(configured).expanduser() if configured else sif_dir(cfg) / f"{family}.sif"
        if not sif.is_file():
            raise EnvironmentMissing(f"{sif}: no SIF image for family '{family}'; build it with "
                                     f"`bobkit images sif {family}` or set images.{family} in the Slurm config")
        return str(sif.resolve()), sif_provenance(sif)
    ref = configured or default_image_ref(spec_image)
    env = {"BOBKIT_IMAGE": ref}
    if runtime == "pyxis" and Path(ref).suffix == ".sqsh" and Path(ref).is_file():
        from bobkit.exec.sif import file_digest

        env["BOBKIT_IMAGE_DIGEST"] = file_digest(Path(ref))
    return ref, env


def weights_dir(cfg: SlurmConfig) -> Path:
    if cfg.weights_dir:
        return Path(cfg.weights_dir).expanduser()
    return Path(os.environ.get("BOBKIT_WEIGHTS") or Path.home() / ".cache" / "bobkit" / "weights")


def host_python(family: str, cfg: SlurmConfig) -> str:
    if family == "detection":
        return cfg.detection_python or os.environ.get("BOBKIT_DETECTION_PYTHON") or cfg.python or sys.executable
    return cfg.python or sys.executable


def launch_for(spec: RunSpec, run: RunDir, runs_dir: Path, data_root: Path, cfg: SlurmConfig,
               image: str, image_env: dict[str, str], gpus: int = 1) -> Launch:
    weights = weights_dir(cfg)
    # the task writes the run's output into log.txt itself (BOBKIT_LOG_CAPTURED)
    env = {"BOBKIT_DATA": str(data_root), "BOBKIT_WEIGHTS": str(weights), "BOBKIT_LOG_CAPTURED": "1",
           "BOBKIT_CONTAINER_RUNTIME": cfg.container, **image_env}
    python = host_python(spec.image_family, cfg)
    if cfg.container == "none" and python != sys.executable:  # another environment: this bobkit on its path
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    mounts = [Mount(runs_dir), Mount(data_root, read_only=True), Mount(weights)]
    mounts += [Mount(Path(path), read_only=True) for path in spec.host_files()]
    return Launch(
        runtime=cfg.container, spec_path=run.spec_path, data_root=data_root, image=image,
        mounts=tuple(mounts), env=tuple(sorted(env.items())), name=f"bobkit-{spec.id}",
        python=python, binary=cfg.binary or "",
        docker_gpu_mode=cfg.docker_gpus, network=cfg.network,
        user=f"{os.getuid()}:{os.getgid()}" if cfg.container in ("docker", "podman") else None,
        extra_args=tuple(cfg.runtime_args), nproc=gpus if gpus > 1 else 1,
    )


# ---------------------------------------------------------------- grouping and submission

@dataclass
class ArrayGroup:
    """Runs submitted as one job array: same image family, GPUs per run and dependency depth."""

    family: str
    gpus: int
    level: int
    specs: list[RunSpec] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.family, self.gpus, self.level)


def group_runs(specs: Sequence[RunSpec], pending_ids: set[str]) -> list[ArrayGroup]:
    """One group per (family, GPUs, level); level orders upstream runs before the runs that read them."""
    by_id = {s.id: s for s in specs}
    level: dict[str, int] = {}

    def depth(s: RunSpec) -> int:
        if s.id not in level:
            ups = [by_id[d] for d in s.depends_on if d in by_id and d in pending_ids]
            level[s.id] = 1 + max((depth(u) for u in ups), default=-1)
        return level[s.id]

    groups: dict[tuple[str, int, int], ArrayGroup] = {}
    for s in specs:
        if s.id not in pending_ids:
            continue
        key = (s.image_family, s.gpus, depth(s))
        groups.setdefault(key, ArrayGroup(*key)).specs.append(s)
    return sorted(groups.values(), key=lambda g: (g.level, g.family, g.gpus))


class SlurmExecutor:
    """Submit runs as job arrays; optionally wait for them and report done/failed runs with their logs."""

    name = "slurm"

    def __init__(self, config: SlurmConfig | None = None, *, wait: bool = False, wait_timeout_s: float | None = None,
                 progress: bool = True, console=None, slurm_config: str | Path | None = None,
                 slurm_partition: str | None = None, slurm_account: str | None = None, slurm_time: str | None = None,
                 container: str | None = None, slurm_wait: bool | None = None) -> None:
        """`config` (or the --slurm-config file / the default file), overridden by the --slurm-* options."""
        base = config if config is not None else load_slurm_config(slurm_config)
        self.config = base.with_options(partition=slurm_partition, account=slurm_account, time=slurm_time,
                                        container=container)
        self.wait = wait or bool(slurm_wait)
        self.wait_timeout_s = wait_timeout_s
        self.progress = progress
        self.console = console
        self.sbatch_calls = 0  # one per array group (benchmarks/slurm_submit.py reports it)

    # -- public
    def execute(self, specs: Sequence[RunSpec], runs_dir: Path, data_root: Path) -> ExecutionReport:
        if shutil.which("sbatch") is None:
            raise EnvironmentMissing("sbatch not found: run `bobkit reproduce --executor slurm` on a Slurm "
                                     "login node, or use --executor local/docker")
        runs_dir, data_root = Path(runs_dir).resolve(), Path(data_root).resolve()
        queue = queue_states()
        report = ExecutionReport()
        to_submit: list[RunSpec] = []
        job_of: dict[str, str] = {}  # run id → job id already in the queue
        ordered, runs = prepare_runs(specs, runs_dir)
        for spec in ordered:
            run = runs[spec.id]
            if run.is_finished():
                report.outcomes.append(RunOutcome(spec.id, "skipped", run.path, "already finished"))
                continue
            job = slurm_job_of(run)
            if job and is_active(queue.get(job)):
                job_of[spec.id] = job
                continue
            to_submit.append(spec)
        for group in group_runs(ordered, {s.id for s in to_submit}):
            job_of.update(self._submit_group(group, runs, runs_dir, data_root, job_of))
        waiting = [s for s in ordered if s.id in job_of]
        if not self.wait:
            for s in waiting:
                rec = read_record(runs[s.id])
                report.outcomes.append(RunOutcome(s.id, "queued", runs[s.id].path,
                                                  f"job {job_of[s.id]}; slurm log {rec.get('slurm_log', '?')}"))
            return report
        report.outcomes.extend(self.wait_for({s.id: runs[s.id] for s in waiting}, job_of))
        return report

    # -- submission
    def _submit_group(self, group: ArrayGroup, runs: dict[str, RunDir], runs_dir: Path, data_root: Path,
                      job_of: dict[str, str]) -> dict[str, str]:
        import submitit

        from bobkit.exec.slurm_task import SlurmRunTask

        cfg = self.config
        res = resources_for(group.specs, cfg)
        image, image_env = image_for(group.family, group.specs[0].image, cfg)
        executor = submitit.SlurmExecutor(folder=runs_dir / LOG_FOLDER / "%j", max_num_timeout=cfg.max_requeues)
        executor.update_parameters(**self._sbatch_parameters(group, res, job_of))
        grace = max(cfg.signal_delay_s - 30, 10)
        tasks = [SlurmRunTask(runs[s.id].path, launch_for(s, runs[s.id], runs_dir, data_root, cfg, image, image_env,
                                                          gpus=res.gpus), grace_s=grace) for s in group.specs]
        before = {s.id: runs[s.id].status_path.read_bytes() if runs[s.id].status_path.is_file() else None
                  for s in group.specs}
        for s in group.specs:  # before sbatch, so a task that starts at once is never overwritten
            runs[s.id].set_status("queued", executor="slurm")
        try:
            with executor.batch():
                jobs = [executor.submit(t) for t in tasks]
        except Exception as exc:  # submitit's FailedJobError carries sbatch's own message
            for s in group.specs:
                _restore(runs[s.id], before[s.id])
            raise EnvironmentMissing(f"sbatch refused the {group.family} array ({len(tasks)} runs): "
                                     f"{_last_line(exc)}; check --slurm-partition/--slurm-account") from None
        self.sbatch_calls += 1
        if self.console is not None and self.progress:
            first = jobs[0].job_id.split("_")[0]
            gpus = f"{res.gpus} GPU(s), " if res.gpus else ""
            self.console.print(f"submitted {len(jobs)} {group.family} run(s) as job {first} "
                               f"({gpus}{res.cpus} CPUs, {math.ceil(res.mem_gb)}G, {res.time_min} min, "
                               f"{cfg.container}); logs under {runs_dir / LOG_FOLDER}")
        submitted = now()
        out: dict[str, str] = {}
        for spec, job in zip(group.specs, jobs):
            _record_submitted(runs[spec.id], job.job_id, str(job.paths.stdout), submitted, res, image or "host",
                              cfg.container)
            out[spec.id] = job.job_id
        return out

    def _sbatch_parameters(self, group: ArrayGroup, res: Resources, job_of: dict[str, str]) -> dict[str, Any]:
        cfg = self.config
        # requeue: Slurm may put the task back on node failure or preemption; `scontrol requeue` needs it too
        extra: dict[str, Any] = {"requeue": True, **cfg.sbatch}
        upstream = sorted({job_of[d] for s in group.specs for d in s.depends_on if d in job_of})
        if upstream:
            extra["dependency"] = "afterok:" + ":".join(upstream)
            extra["kill-on-invalid-dep"] = "yes"
        params: dict[str, Any] = {
            "job_name": f"bobkit-{group.family}", "time": res.time_min, "nodes": 1, "ntasks_per_node": 1,
            "cpus_per_task": res.cpus, "mem": f"{int(math.ceil(res.mem_gb))}G",
            "array_parallelism": cfg.array_parallelism, "signal_delay_s": cfg.signal_delay_s,
            "stderr_to_stdout": True, "setup": list(cfg.setup),
        }
        if res.gpus:
            params["gres"] = f"gpu:{res.gpus}"
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(cfg, key):
                params[key] = getattr(cfg, key)
        params["additional_parameters"] = {k: v for k, v in extra.items() if v is not False}
        return params

    # -- waiting
    def wait_for(self, runs: dict[str, RunDir], job_of: dict[str, str]) -> list[RunOutcome]:
        """Poll the run directories and squeue until every run is done, failed or gone from the queue."""
        left = dict(runs)
        outcomes: list[RunOutcome] = []
        deadline = time.monotonic() + self.wait_timeout_s if self.wait_timeout_s else None
        with _progress(self.progress, len(runs)) as tick:
            while left:
                queue = queue_states()
                for rid, run in list(left.items()):
                    outcome = settled(run, queue)
                    if outcome:
                        outcomes.append(outcome)
                        del left[rid]
                tick(len(runs) - len(left))
                if not left:
                    break
                if deadline and time.monotonic() > deadline:
                    for rid, run in left.items():
                        outcomes.append(RunOutcome(rid, "queued", run.path, f"still in the queue as job {job_of[rid]}"))
                    break
                time.sleep(self.config.poll_s)
        return outcomes


def settled(run: RunDir, queue: dict[str, str]) -> RunOutcome | None:
    """The outcome of a submitted run once it is over; None while Slurm still has it."""
    if run.is_finished():
        return RunOutcome(run.path.name, "done", run.path)
    rec = read_record(run)
    job = rec.get("job_id")
    if is_active(queue.get(job or "")):
        return None
    st = run.status_record()
    confirmed = job_state(job) if job and st.get("state") not in ("failed", "interrupted") else None
    if is_active(confirmed):
        return None
    logs = f"log {run.log_path}; slurm log {rec.get('slurm_log', '?')}"
    if st.get("state") in ("failed", "interrupted"):
        why = st.get("error") or st.get("message") or f"exit code {st.get('exit_code')}"
        return RunOutcome(run.path.name, st["state"], run.path, f"{why} (job {job}; {logs})")
    # Gone from the queue without a word from the task: cancelled before it started, an upstream
    # run failed, or the node died. Record it so `status` shows it and `reproduce` resubmits it.
    state = queue.get(job or "") or confirmed or "no longer in the queue"
    if st.get("state") == "requeued":  # Slurm requeued it, then ended it before the task ran again
        message = (f"job {job} was requeued after its checkpoint but ended ({state}) before it started again "
                   "(slurmctld's log says why); `bobkit reproduce` resubmits it and it resumes from "
                   f"checkpoints/last.pt; {logs}")
    else:
        message = f"job {job} ended ({state}) before the run finished; {logs}"
    update_status(run, state="failed", message=message, finished=now())
    return RunOutcome(run.path.name, "failed", run.path, message)


def _record_submitted(run: RunDir, job_id: str, slurm_log: str, submitted: str, res: Resources, image: str,
                      runtime: str) -> None:
    update_record(run, job_id=job_id, submitted=submitted, slurm_log=slurm_log, image=image, runtime=runtime,
                  time_limit_min=res.time_min, gpus_requested=res.gpus)


def _restore(run: RunDir, previous: bytes | None) -> None:
    if previous is None:
        run.status_path.unlink(missing_ok=True)
    else:
        from bobkit.results import atomic_write_text

        atomic_write_text(run.status_path, previous.decode("utf-8"))


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [type(exc).__name__])[-1]


class _progress:
    """A rich progress bar on stderr while waiting (nothing when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            task = self._bar.add_task("slurm runs", total=self.total)
            return lambda n: self._bar.update(task, completed=n)
        return lambda n: None

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


# ---------------------------------------------------------------- `bobkit status`

def queue_summary(experiment_runs: Iterable[tuple[str, RunDir]]) -> dict[str, Any]:
    """Slurm's view of the unfinished runs that were submitted to it, for `bobkit status`.

    experiment_runs: (experiment, run) pairs (bobkit.results.experiment_runs); a run shared by several
    experiments is counted once. counts: Slurm state → runs (PENDING, RUNNING, ...; LOST for a job that
    left the queue while its run was neither done nor failed: `reproduce` resubmits it); runs: one row
    per run with its experiments, job id, state, attempt and both logs. Calls squeue once, and not at
    all when no run went to Slurm.
    """
    experiments: dict[Path, list[str]] = {}
    by_path: dict[Path, RunDir] = {}
    for exp, run in experiment_runs:
        experiments.setdefault(run.path, []).append(exp)
        by_path.setdefault(run.path, run)
    runs = [r for r in by_path.values() if not r.is_finished() and slurm_job_of(r)]
    if not runs:
        return {"counts": {}, "runs": []}
    try:
        queue = queue_states()
    except EnvironmentMissing as exc:
        return {"counts": {}, "runs": [], "error": str(exc)}
    counts: dict[str, int] = defaultdict(int)
    rows = []
    for run in runs:
        rec = read_record(run)
        job = rec.get("job_id")
        state = queue.get(job or "")
        if not is_active(state):
            recorded = run.status()
            state = recorded.upper() if recorded in ("failed", "interrupted") else "LOST"
        counts[state] += 1
        rows.append({"run_id": run.path.name, "experiment": ", ".join(sorted(set(experiments[run.path]))), "job_id": job,
                     "slurm_state": state, "attempt": rec.get("attempt", 0), "requeues": rec.get("requeues", 0),
                     "log": str(run.log_path), "slurm_log": rec.get("slurm_log")})
    return {"counts": dict(sorted(counts.items())), "runs": rows}


def print_queue_summary(summary: dict[str, Any], out) -> None:
    """The squeue part of `bobkit status`: one line of counts, then the runs Slurm lost."""
    if summary.get("error"):
        out.print(f"[yellow]slurm[/]: {summary['error']}")
    if not summary.get("counts"):
        return
    out.print("slurm: " + ", ".join(f"{n} {state.lower()}" for state, n in summary["counts"].items()))
    for row in summary["runs"]:
        if row["slurm_state"] == "LOST":
            out.print(f"  [red]lost[/] {row['run_id']} ({row['experiment']}): job {row['job_id']} left the queue "
                      f"unfinished; `bobkit reproduce` resubmits it  [dim]({row['slurm_log']})[/]")

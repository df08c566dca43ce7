"""Packing runs onto one machine's GPUs, and making sure no run is ever run by two processes at once.

Placement is list scheduling, longest run first (by estimated wall time = gpu_hours / gpus), with
EASY backfilling: when the longest waiting run does not fit, it gets a reservation at the earliest time
enough GPUs free up, and shorter runs fill the idle GPUs only if they do not delay that reservation.
So every GPU stays busy while work remains, and a run that needs all GPUs is never starved by a
stream of one-GPU runs. The same `GpuScheduler` drives the docker executor (real clock) and the
makespan benchmark (simulated clock).

Two `bobkit reproduce` processes on one runs directory: each run is claimed with an OS file lock
(`<run_dir>/.lock`, shared with the local executor, released by the kernel if the process dies) before it starts, and a run
that is finished or claimed elsewhere is never started here.
"""

from __future__ import annotations

import heapq
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from bobkit.errors import BadInput

CLAIM = ".lock"  # the same lock file as the local executor's


@dataclass(frozen=True)
class Job:
    id: str
    gpus: int
    gpu_hours: float
    depends_on: tuple[str, ...] = ()

    @property
    def hours(self) -> float:
        """Estimated wall time on its GPUs."""
        return self.gpu_hours / max(self.gpus, 1)


@dataclass(frozen=True)
class Placement:
    job: Job
    devices: tuple[str, ...]


@dataclass
class _Running:
    placement: Placement
    est_end: float


class GpuScheduler:
    """Decides which waiting runs start on which devices; the caller starts them and reports back."""

    def __init__(self, jobs: Iterable[Job], devices: Sequence[str]) -> None:
        if not devices:
            raise BadInput("no GPU (or slot) to schedule on")
        self.devices = tuple(devices)
        self.free: list[str] = list(self.devices)
        self.jobs: dict[str, Job] = {}
        self.clamped: dict[str, int] = {}
        for j in jobs:
            if j.gpus > len(self.devices):  # a run asking for more GPUs than this machine has gets them all
                self.clamped[j.id] = j.gpus
                j = Job(j.id, len(self.devices), j.gpu_hours, j.depends_on)
            self.jobs[j.id] = j
        self.waiting: set[str] = set(self.jobs)
        self.running: dict[str, _Running] = {}
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.blocked: dict[str, str] = {}  # job id -> the failed upstream run it needed

    # ------------------------------------------------------------ state

    def _deps_done(self, job: Job) -> bool:
        return all(d in self.done or d not in self.jobs for d in job.depends_on)

    def ready(self) -> list[Job]:
        """Waiting runs whose upstream runs are done, longest first (ties: more GPUs, then id)."""
        jobs = [self.jobs[i] for i in self.waiting if self._deps_done(self.jobs[i])]
        return sorted(jobs, key=lambda j: (-j.hours, -j.gpus, j.id))

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.running

    # ------------------------------------------------------------ decisions

    def _reservation(self, head: Job, now: float) -> tuple[float, int]:
        """When `head` can start at the earliest, and how many GPUs will be spare then."""
        free = len(self.free)
        for r in sorted(self.running.values(), key=lambda r: r.est_end):
            free += len(r.placement.devices)
            if free >= head.gpus:
                return max(r.est_end, now), free - head.gpus
        return now, free - head.gpus  # unreachable while the head was clamped to the device count

    def place(self, now: float = 0.0) -> list[Placement]:
        """Start as many ready runs as fit now; returns the new placements (devices now taken)."""
        out: list[Placement] = []
        shadow: float | None = None
        spare = 0
        for job in self.ready():
            if job.gpus <= len(self.free):
                fits_before = shadow is None or now + job.hours <= shadow
                if not fits_before and job.gpus > spare:
                    continue  # would delay the reserved run
                if shadow is not None and not fits_before:
                    spare -= job.gpus
                out.append(self._start(job, now))
            elif shadow is None:
                shadow, spare = self._reservation(job, now)
        return out

    def _start(self, job: Job, now: float) -> Placement:
        devices = tuple(self.free[: job.gpus])
        del self.free[: job.gpus]
        self.waiting.discard(job.id)
        p = Placement(job, devices)
        self.running[job.id] = _Running(p, now + job.hours)
        return p

    def finish(self, job_id: str, ok: bool = True) -> list[str]:
        """A run ended: free its devices; a failure blocks every run downstream. Returns the blocked ids."""
        self._release(job_id)
        self.waiting.discard(job_id)
        if ok:
            self.done.add(job_id)
            return []
        self.failed.add(job_id)
        return self._block_downstream(job_id)

    def skip(self, job_id: str, finished: bool) -> list[str]:
        """A run that will not run here (even if just placed): finished already (counts as done) or given up."""
        self._release(job_id)
        self.waiting.discard(job_id)
        if finished:
            self.done.add(job_id)
            return []
        self.failed.add(job_id)
        return self._block_downstream(job_id)

    def _release(self, job_id: str) -> None:
        r = self.running.pop(job_id, None)
        if r is not None:
            self.free.extend(r.placement.devices)
            self.free.sort(key=self.devices.index)

    def _block_downstream(self, root: str) -> list[str]:
        blocked, frontier = [], [root]
        while frontier:
            up = frontier.pop()
            for j in list(self.waiting):
                if up in self.jobs[j].depends_on:
                    self.waiting.discard(j)
                    self.blocked[j] = root
                    blocked.append(j)
                    frontier.append(j)
        return blocked


# ---------------------------------------------------------------- simulation (benchmark, tests)

@dataclass
class Simulation:
    makespan: float
    lower_bound: float
    busy_fraction: float
    timeline: list[tuple[float, float, Placement]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.makespan / self.lower_bound if self.lower_bound else 1.0


def lower_bound(jobs: Sequence[Job], n_devices: int) -> float:
    """max(total GPU-hours / GPUs, the longest run's wall time), runs clamped to the machine."""
    total = sum(j.gpu_hours for j in jobs)
    longest = max((j.gpu_hours / min(max(j.gpus, 1), n_devices) for j in jobs), default=0.0)
    return max(total / n_devices, longest)


def simulate(jobs: Sequence[Job], n_devices: int) -> Simulation:
    """Run the scheduler on a simulated clock where each run takes exactly its estimate."""
    devices = [str(i) for i in range(n_devices)]
    sched = GpuScheduler(jobs, devices)
    now, events, timeline = 0.0, [], []
    seq = 0
    while not sched.finished:
        for p in sched.place(now):
            end = now + p.job.hours
            heapq.heappush(events, (end, seq, p))
            seq += 1
            timeline.append((now, end, p))
        if not events:
            raise BadInput("the runs' dependencies cannot be satisfied (a cycle or a missing upstream)")
        now, _, p = heapq.heappop(events)
        sched.finish(p.job.id)
        while events and events[0][0] <= now:  # finish everything ending at the same instant first
            _, _, q = heapq.heappop(events)
            sched.finish(q.job.id)
    busy = sum((e - s) * len(p.devices) for s, e, p in timeline)
    return Simulation(makespan=now, lower_bound=lower_bound(list(sched.jobs.values()), n_devices),
                      busy_fraction=busy / (now * n_devices) if now else 1.0, timeline=timeline)


def jobs_from_specs(specs) -> list[Job]:
    return [Job(s.id, max(int(s.gpus), 1), float(s.gpu_hours), tuple(s.depends_on)) for s in specs]


# ---------------------------------------------------------------- GPUs of this machine

@dataclass(frozen=True)
class Gpu:
    index: str
    name: str = ""
    uuid: str = ""
    memory_mb: int = 0
    compute_capability: str = ""  # "9.0"
    driver: str = ""

    @property
    def arch(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "") if self.compute_capability else ""


def parse_gpu_list(text: str) -> list[str]:
    """`--gpus 0,1,3` → ['0', '1', '3'] (indices or UUIDs, as Docker's device_ids take them)."""
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids or len(set(ids)) != len(ids):
        raise BadInput(f"--gpus '{text}': give distinct GPU indices or UUIDs separated by commas, e.g. 0,1,2,3")
    return ids


def _nvml_gpus() -> list[Gpu]:
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20
            out.append(Gpu(str(i), name.decode() if isinstance(name, bytes) else name,
                           uuid.decode() if isinstance(uuid, bytes) else uuid, int(mem), f"{major}.{minor}", driver))
        return out
    finally:
        pynvml.nvmlShutdown()


def _smi_gpus() -> list[Gpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    q = "index,name,uuid,memory.total,compute_cap,driver_version"
    proc = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return []
    out = []
    for line in proc.stdout.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == 6:
            out.append(Gpu(f[0], f[1], f[2], int(float(f[3] or 0)), f[4], f[5]))
    return out


def discover_gpus() -> list[Gpu]:
    """The GPUs NVML sees (nvidia-smi when the NVML bindings are missing); [] on a machine without."""
    if os.environ.get("BOBKIT_NO_GPU"):
        return []
    try:
        return _nvml_gpus()
    except Exception:  # noqa: BLE001 - no driver, no library, no device: all mean "none here"
        try:
            return _smi_gpus()
        except (OSError, subprocess.SubprocessError, ValueError):
            return []


def device_ids(gpus_option: str | None) -> list[str]:
    """--gpus when given, else every GPU found."""
    if gpus_option:
        return parse_gpu_list(gpus_option)
    return [g.index for g in discover_gpus()]


# ---------------------------------------------------------------- one run, one process

class RunClaim:
    """An exclusive, non-blocking claim on a run directory, held while this process runs it."""

    def __init__(self, run_dir: Path) -> None:
        from filelock import FileLock

        self.path = Path(run_dir) / CLAIM
        self._lock = FileLock(str(self.path))

    def acquire(self) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
            return True
        except Timeout:
            return False

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked


def claimed_elsewhere(run_dir: Path) -> bool:
    """True while another process holds the run's claim (checked by trying to take it)."""
    claim = RunClaim(run_dir)
    if claim.acquire():
        claim.release()
        return False
    return True

"""Docker executor: every run in its own container of its task family's image, packed onto the GPUs.

A container gets exactly what its run needs and nothing else:
- the GPUs the scheduler placed it on (a DeviceRequest with those device ids), or none;
- the data root and the weights cache read-only, its own run directory read-write, and the run
  directories of its upstream runs read-only (their checkpoints), all under fixed paths;
- no network (weights are fetched and verified before a run starts), no capabilities, no new
  privileges, a read-only root file system with a tmpfs /tmp, shared memory sized for data loaders;
- the host user's uid:gid, so files in the runs directory stay the user's (root on the host gets the
  image's unprivileged user instead, and the run directory is handed back to root afterwards);
- BOBKIT_IMAGE / BOBKIT_IMAGE_DIGEST, which `bobkit run-one` writes into the run's provenance.

Output streams into <run_dir>/log.txt and a rich progress view. Ctrl-C (or SIGTERM) stops the
containers (`docker stop`: run-one marks its run interrupted and keeps its checkpoints) and raises
ExecutionInterrupted; the next `reproduce` resumes. A run claimed by another bobkit process (the
`.lock` in its run directory, shared with the local executor) is reported busy and never started twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bobkit.errors import EnvironmentMissing
from bobkit.exec.base import ExecutionReport, RunOutcome, prepare_all
from bobkit.exec.scheduler import GpuScheduler, RunClaim, device_ids, jobs_from_specs
from bobkit.plan import RunSpec
from bobkit.results import RunDir

DATA = "/data"
WEIGHTS = "/weights"
RUNS = "/runs"
POLL_S = 0.25
STOP_GRACE_S = 30
LABEL_RUN = "io.bobkit.run-id"


def weights_root() -> Path:
    return Path(os.environ.get("BOBKIT_WEIGHTS") or Path.home() / ".cache" / "bobkit" / "weights")


def container_run_dir(run_id: str) -> str:
    """A run's folder inside the container: /runs/<run id>, as on the host (bobkit.results.RunDir.of)."""
    return str(RunDir.of(Path(RUNS), run_id).path)


def container_spec_path(spec: RunSpec) -> str:
    return str(RunDir.of(Path(RUNS), spec.id).spec_path)


def run_command(spec: RunSpec, nproc: int) -> list[str]:
    """Arguments after the image's entry point: `run-one` itself, or torchrun around it for several GPUs."""
    tail = [container_spec_path(spec), "--data-root", DATA]
    if nproc > 1:
        return ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "bobkit", "run-one", *tail]
    return tail


def container_config(spec: RunSpec, *, image_ref: str, image_digest: str, runs_dir: Path, data_root: Path,
                     weights_dir: Path, devices: Sequence[str], user: str, shm_size: str,
                     tmp_size: str = "2g", gpu_devices: bool = True) -> dict[str, Any]:
    """Keyword arguments for `client.containers.create` (pure: tests read it without an engine)."""
    from docker.types import DeviceRequest, Mount

    runs_dir = Path(runs_dir)
    mounts = [
        Mount(target=DATA, source=str(data_root), type="bind", read_only=True),
        Mount(target=WEIGHTS, source=str(weights_dir), type="bind", read_only=True),
        Mount(target=container_run_dir(spec.id), source=str(RunDir.of(runs_dir, spec.id).path), type="bind",
              read_only=False),
    ]
    for up in spec.depends_on:
        mounts.append(Mount(target=container_run_dir(up), source=str(RunDir.of(runs_dir, up).path), type="bind",
                            read_only=True))
    for path in spec.host_files():
        mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    gpu = bool(devices) and gpu_devices
    env = {
        "BOBKIT_DATA": DATA, "BOBKIT_WEIGHTS": WEIGHTS, "BOBKIT_IMAGE": image_ref,
        "BOBKIT_IMAGE_DIGEST": image_digest, "BOBKIT_LOG_CAPTURED": "1", "HOME": "/tmp",
    }
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return dict(
        command=run_command(spec, len(devices) if gpu else 1),
        name=f"bobkit-{spec.id}-{uuid.uuid4().hex[:6]}",
        user=user,
        environment=env,
        mounts=mounts,
        device_requests=[DeviceRequest(driver="nvidia", device_ids=list(devices), capabilities=[["gpu"]])]
        if gpu else [],
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={tmp_size}"},
        shm_size=shm_size,
        init=True,
        # the experiment whose `reproduce` started it (a shared run may serve others too)
        labels={LABEL_RUN: spec.id, "io.bobkit.experiment": spec.experiment, "io.bobkit.devices": ",".join(devices)},
        detach=True,
    )


@dataclass
class _Active:
    spec: RunSpec
    run: RunDir
    claim: RunClaim
    devices: tuple[str, ...]
    container: Any = None
    thread: threading.Thread | None = None
    exit_code: int | None = None
    error: str = ""
    last_line: str = ""
    started: float = field(default_factory=time.time)
    chowned: bool = False


class DockerExecutor:
    """One container per run on this machine's Docker engine, GPUs packed by GpuScheduler."""

    name = "docker"

    def __init__(self, gpus: Sequence[str] | str | None = None, images: dict[str, str] | None = None,
                 shm_size: str = "8g", cpu_slots: int = 1, keep_containers: bool = False,
                 progress: bool = True, console=None, client=None, weights_dir: Path | None = None) -> None:
        if isinstance(gpus, str):
            gpus = [g for g in gpus.split(",") if g.strip()]
        self.gpus = [str(g).strip() for g in gpus] if gpus is not None else None  # [] = CPU only
        self.images = dict(images or {})
        self.shm_size = shm_size
        self.cpu_slots = max(1, int(cpu_slots))
        self.keep_containers = keep_containers
        self.progress = progress
        self.console = console
        self._client = client
        self.weights_dir = weights_dir
        self.containers: dict[str, str] = {}  # run id -> container id (kept for inspection when keep_containers)

    # ------------------------------------------------------------ set-up

    def _image_for(self, client, spec: RunSpec, cache: dict[str, tuple[str, str, Any]]) -> tuple[str, str, Any]:
        from bobkit.images import image_digest, resolve_image

        ref = self.images.get(spec.image_family) or spec.image
        if ref not in cache:
            image = resolve_image(ref, client)
            cache[ref] = (ref, image_digest(image), image)
        return cache[ref]

    def _user_for(self, image) -> tuple[str, int | None]:
        """uid:gid for the container, and the uid the run directory must be lent to (root host only)."""
        uid, gid = os.getuid(), os.getgid()
        if uid != 0:
            return f"{uid}:{gid}", None
        image_uid = int((image.labels or {}).get("io.bobkit.uid", "1000"))
        return f"{image_uid}:{image_uid}", image_uid

    # ------------------------------------------------------------ the run loop

    def execute(self, specs: Sequence[RunSpec], runs_dir: Path, data_root: Path) -> ExecutionReport:
        import docker

        from bobkit.exec.local import ExecutionInterrupted, _Progress
        from bobkit.images import docker_client

        client = self._client or docker_client()
        runs_dir, data_root = Path(runs_dir).resolve(), Path(data_root).resolve()
        weights = Path(self.weights_dir or weights_root()).resolve()
        for folder in (data_root, weights):
            folder.mkdir(parents=True, exist_ok=True)
        report, runs, pending = prepare_all(specs, runs_dir)
        images: dict[str, tuple[str, str, Any]] = {}
        for spec in pending:  # every image must exist before the first container starts
            self._image_for(client, spec, images)
        devices = list(self.gpus) if self.gpus is not None else device_ids(None)
        gpu_mode = bool(devices)
        slots = devices if gpu_mode else [f"cpu{i}" for i in range(self.cpu_slots)]
        by_id = {s.id: s for s in pending}
        sched = GpuScheduler(jobs_from_specs(pending), slots)
        active: dict[str, _Active] = {}
        view = _Progress(self.console, len(pending), len(report.outcomes), enabled=self.progress)
        clock0 = time.monotonic()

        def record(spec: RunSpec, state: str, message: str) -> None:
            report.outcomes.append(RunOutcome(spec.id, state, runs[spec.id].path, message))
            view.finished(spec, state, message, runs[spec.id])

        def block(ids: list[str], why: str, state: str = "failed") -> None:
            for j in ids:
                record(by_id[j], state, why)

        stop_signal = signal.SIGINT
        old_term = None
        if threading.current_thread() is threading.main_thread():
            def on_term(signum, _frame):
                nonlocal stop_signal
                stop_signal = signal.SIGTERM
                raise KeyboardInterrupt
            old_term = signal.signal(signal.SIGTERM, on_term)
        try:
            with view:
                while not sched.finished:
                    now_h = (time.monotonic() - clock0) / 3600.0
                    for p in sched.place(now_h):
                        spec, run = by_id[p.job.id], runs[p.job.id]
                        claim = RunClaim(run.path)
                        if not claim.acquire():
                            blocked = sched.skip(spec.id, finished=False)
                            record(spec, "busy", "another bobkit process is running it")
                            block(blocked, f"upstream run {spec.id} is running in another bobkit process; "
                                           "run reproduce again when it is done", "busy")
                            continue
                        if run.is_finished():
                            claim.release()
                            sched.skip(spec.id, finished=True)
                            record(spec, "skipped", "already finished")
                            continue
                        act = _Active(spec, run, claim, p.devices if gpu_mode else ())
                        active[spec.id] = act
                        try:
                            self._start(client, act, images, runs_dir, data_root, weights, view)
                        except docker.errors.DockerException as exc:  # the engine refused the container
                            act.error = f"could not start the container: {exc}"
                            act.exit_code = -1
                    for run_id, act in list(active.items()):
                        if act.thread is not None and act.thread.is_alive():
                            continue
                        del active[run_id]
                        state, message = self._reap(act)
                        blocked = sched.finish(run_id, ok=state == "done")
                        record(act.spec, state, message)
                        block(blocked, f"upstream run {run_id} did not finish ({state})")
                    view.update_active([(a.spec, a.last_line, time.time() - a.started) for a in active.values()])
                    if not sched.finished:
                        time.sleep(POLL_S)
        except KeyboardInterrupt:
            for act in list(active.values()):
                self._stop(act)
            for act in list(active.values()):
                state, message = self._reap(act, interrupted=True)
                record(act.spec, state, message)
            raise ExecutionInterrupted(report, 128 + int(stop_signal)) from None
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        return report

    # ------------------------------------------------------------ one container

    def _start(self, client, act: _Active, images, runs_dir: Path, data_root: Path, weights: Path, view) -> None:
        ref, digest, image = self._image_for(client, act.spec, images)
        user, lend_uid = self._user_for(image)
        if lend_uid is not None:
            _chown_tree(act.run.path, lend_uid, lend_uid)
            act.chowned = True
        kwargs = container_config(act.spec, image_ref=ref, image_digest=digest, runs_dir=runs_dir,
                                  data_root=data_root, weights_dir=weights, devices=act.devices, user=user,
                                  shm_size=self.shm_size)
        with open(act.run.log_path, "a", encoding="utf-8") as log:
            gpus = f" on GPU {','.join(act.devices)}" if act.devices else ""
            log.write(f"\n==> docker run {ref} ({digest[:19]}){gpus}: {' '.join(kwargs['command'])}\n")
        act.container = client.containers.create(image.id, **kwargs)
        self.containers[act.spec.id] = act.container.id
        act.container.start()
        act.thread = threading.Thread(target=self._follow, args=(act,), daemon=True)
        act.thread.start()
        view.started(act.spec)

    def _follow(self, act: _Active) -> None:
        """Stream the container's output into log.txt until it exits, then keep its exit code."""
        try:
            with open(act.run.log_path, "ab", buffering=0) as log:
                pending = b""
                for chunk in act.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    log.write(chunk)
                    pending = (pending + chunk)[-4096:]
                    lines = [ln for ln in pending.decode("utf-8", "replace").splitlines() if ln.strip()]
                    if lines:
                        act.last_line = lines[-1].strip()
            act.exit_code = int(act.container.wait().get("StatusCode", -1))
        except Exception as exc:  # noqa: BLE001 - the engine went away: report, never hang the loop
            act.error = f"lost the container: {type(exc).__name__}: {exc}"

    def _stop(self, act: _Active) -> None:
        if act.container is None:
            return
        try:
            act.container.stop(timeout=STOP_GRACE_S)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _reap(self, act: _Active, interrupted: bool = False) -> tuple[str, str]:
        if act.thread is not None:
            act.thread.join(timeout=STOP_GRACE_S + 30)
        try:
            if act.container is not None and not self.keep_containers:
                try:
                    act.container.remove(force=True)
                except Exception:  # noqa: BLE001
                    pass
            if act.chowned:
                _chown_tree(act.run.path, 0, 0)
            code, run = act.exit_code, act.run
            status = run.status_record()
            if code == 0 and run.is_finished():
                return "done", ""
            if interrupted or code in (130, 143):
                if status.get("state") != "interrupted":
                    run.set_status("interrupted", exit_code=code)
                return "interrupted", "stopped; run reproduce again to resume"
            if code == 3:
                return "missing", status.get("error") or act.last_line
            error = status.get("error") if status.get("state") == "failed" else None
            if not error:
                error = act.error or f"container exited with code {code}"
                if code == 137:
                    error += " (killed: out of memory, or stopped)"
                error += f"; last output: {act.last_line}" if act.last_line else ""
                run.set_status("failed", error=error, exit_code=code)
            return "failed", error
        finally:
            act.claim.release()


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chown(p, uid, gid)


def docker_available() -> bool:
    """True when a Docker daemon answers (reproduce then defaults to this executor)."""
    from bobkit.images import daemon_answers

    return daemon_answers()


def daemon_error() -> EnvironmentMissing | None:
    from bobkit.images import docker_client

    try:
        docker_client(timeout=5)
        return None
    except EnvironmentMissing as exc:
        return exc


def parse_image_overrides(pairs: Sequence[str] | None) -> dict[str, str]:
    """`--image classification=REF` (repeatable) → {family: reference}."""
    from bobkit.errors import BadInput
    from bobkit.images import FAMILIES

    out: dict[str, str] = {}
    for pair in pairs or []:
        fam, sep, ref = pair.partition("=")
        if not sep or not ref.strip():
            raise BadInput(f"--image '{pair}': expected FAMILY=IMAGE, e.g. classification=bobkit/classification:latest")
        if fam not in FAMILIES:
            raise BadInput(f"--image '{pair}': unknown family '{fam}'; known: {', '.join(FAMILIES)}")
        out[fam] = ref.strip()
    return out


def default_executor(specs: Sequence[RunSpec], images: dict[str, str] | None = None) -> str:
    """$BOBKIT_EXECUTOR, else docker when a daemon answers and every image the runs need is there, else local."""
    chosen = os.environ.get("BOBKIT_EXECUTOR")
    if chosen:
        return chosen
    from bobkit.images import docker_client

    try:
        client = docker_client(timeout=5)
    except EnvironmentMissing:
        return "local"
    import docker

    needed = {(images or {}).get(s.image_family) or s.image for s in specs}
    try:
        for ref in needed:
            client.images.get(ref)
    except docker.errors.DockerException:
        return "local"
    return "docker"

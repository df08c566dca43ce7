"""Local executor: `bobkit run-one` as a subprocess per run, on this host.

One run at a time, or one per GPU with `gpus=["0", "1", ...]` (each child sees only its own
devices through CUDA_VISIBLE_DEVICES; a run that asks for several GPUs gets that many and is
started under torchrun). Upstream runs finish before the runs that read their checkpoints;
finished runs are skipped; a file lock per run directory keeps two `reproduce` processes from
running the same run. Each child's output streams into its run's log.txt.

Detection runs need mmdet, which lives in its own environment: they run under
$BOBKIT_DETECTION_PYTHON (else the checkout's .venv-det, else this Python), and are reported as
'environment missing' when that Python cannot import mmdet and bobkit.

Ctrl-C (or SIGTERM) stops the running children, marks them interrupted (checkpoints kept) and
raises ExecutionInterrupted; the next `reproduce` resumes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Sequence

from bobkit.exec.base import ExecutionReport, RunOutcome, prepare_all
from bobkit.plan import RunSpec
from bobkit.results import RunDir

DETECTION_PYTHON = "BOBKIT_DETECTION_PYTHON"
LOCK_NAME = ".lock"
POLL_S = 0.2
STOP_GRACE_S = 30.0
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class ExecutionInterrupted(Exception):
    """The user stopped the execution; `report` holds what finished and what was interrupted."""

    def __init__(self, report: ExecutionReport, exit_code: int) -> None:
        super().__init__("interrupted")
        self.report = report
        self.exit_code = exit_code


class _Stop(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class Child:
    spec: RunSpec
    run: RunDir
    proc: subprocess.Popen
    lock: object
    gpus: list[str]
    log: IO[str]
    pump: threading.Thread
    started: float = field(default_factory=time.time)
    last_line: str = ""


# The detection environment scripts/install.sh creates in a checkout.
CHECKOUT_DETECTION_PYTHON = Path(__file__).resolve().parents[2] / ".venv-det" / "bin" / "python"


def python_for(spec: RunSpec) -> str:
    """Detection runs use $BOBKIT_DETECTION_PYTHON, else the checkout's .venv-det, else this Python."""
    if spec.image_family == "detection":
        fallback = str(CHECKOUT_DETECTION_PYTHON) if CHECKOUT_DETECTION_PYTHON.is_file() else sys.executable
        return os.environ.get(DETECTION_PYTHON) or fallback
    return sys.executable


def child_env(python: str, gpus: list[str] | None, data_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BOBKIT_LOG_CAPTURED"] = "1"
    env["BOBKIT_DATA"] = str(data_root)
    env["PYTHONUNBUFFERED"] = "1"
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if python != sys.executable:  # another environment: make this checkout's bobkit importable there
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_one_command(python: str, spec: RunSpec, run: RunDir, data_root: Path, nproc: int) -> list[str]:
    tail = ["-m", "bobkit", "run-one", str(run.spec_path), "--data-root", str(data_root)]
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *tail]
    return [python, *tail]


class LocalExecutor:
    name = "local"

    def __init__(self, gpus: Sequence[str] | None = None, jobs: int = 1, progress: bool = True, console=None,
                 command: Callable[..., list[str]] | None = None) -> None:
        """gpus: device indices to spread runs over, one run per GPU (None: devices untouched).
        jobs: runs at once when no GPUs are given (CPU smoke runs use one thread each).
        command: builds a child's argv from (python, spec, run, data_root, nproc); tests swap it."""
        self.gpus = [str(g).strip() for g in gpus if str(g).strip()] if gpus else None
        self.slots = list(self.gpus) if self.gpus is not None else [f"cpu{i}" for i in range(max(1, int(jobs)))]
        self.progress = progress
        self.console = console
        self.command = command or run_one_command
        self._env_checked: dict[str, str | None] = {}

    # ------------------------------------------------------------ environment checks

    def environment_problem(self, spec: RunSpec) -> str | None:
        """None when this spec's Python can run it; else one line saying what is missing."""
        if spec.image_family != "detection":
            return None
        python = python_for(spec)
        if python in self._env_checked:
            return self._env_checked[python]
        probe = [python, "-c", "import mmdet, bobkit.runone"]
        try:
            proc = subprocess.run(probe, capture_output=True, text=True, timeout=300,
                                  env=child_env(python, None, Path(".")))
            bad = proc.returncode != 0
            why = (proc.stderr.strip().splitlines() or ["?"])[-1] if bad else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            bad, why = True, str(exc)
        problem = None
        if bad:
            how = (f"{DETECTION_PYTHON}={python}" if os.environ.get(DETECTION_PYTHON)
                   else f"{DETECTION_PYTHON} is not set, so {python}")
            problem = (f"environment missing: detection runs need mmdet 3.3 and bobkit, and {how} cannot import them "
                       f"({why}); set {DETECTION_PYTHON} to the detection environment's python, or use "
                       "--executor docker")
        self._env_checked[python] = problem
        return problem

    # ------------------------------------------------------------ the run loop

    def execute(self, specs: Sequence[RunSpec], runs_dir: Path, data_root: Path) -> ExecutionReport:
        from filelock import FileLock, Timeout

        runs_dir, data_root = Path(runs_dir).resolve(), Path(data_root).resolve()
        report, runs, pending = prepare_all(specs, runs_dir)
        outcome_of: dict[str, str] = {o.run_id: "done" for o in report.outcomes}
        free = list(self.slots)
        active: list[Child] = []
        view = _Progress(self.console, len(pending), len(report.outcomes), enabled=self.progress)
        old_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
        if _main_thread():
            signal.signal(signal.SIGTERM, _raise_stop)
        try:
            with view:
                while pending or active:
                    for spec in list(pending):
                        run = runs[spec.id]
                        blocked = self._upstream_problem(spec, runs, outcome_of, runs_dir)
                        if blocked == "wait":
                            continue
                        if blocked:
                            state, msg = blocked
                            run.set_status("failed", error=msg, exit_code=3 if state == "missing" else 4)
                            self._finish(report, outcome_of, view, spec, run, state, msg, pending)
                            continue
                        problem = self.environment_problem(spec)
                        if problem:
                            run.set_status("failed", error=problem, exit_code=3)
                            self._finish(report, outcome_of, view, spec, run, "missing", problem, pending)
                            continue
                        need = max(1, spec.gpus) if self.gpus is not None else 1
                        if need > len(self.slots):
                            msg = f"needs {need} GPUs; --gpus gives {len(self.gpus)}"
                            self._finish(report, outcome_of, view, spec, run, "failed", msg, pending)
                            continue
                        if len(free) < need:
                            continue
                        lock = FileLock(str(run.path / LOCK_NAME))
                        try:
                            lock.acquire(timeout=0)
                        except Timeout:
                            self._finish(report, outcome_of, view, spec, run, "busy",
                                         "another bobkit process is running it", pending)
                            continue
                        if run.is_finished():  # finished by another process since we looked
                            lock.release()
                            self._finish(report, outcome_of, view, spec, run, "skipped", "already finished", pending)
                            continue
                        gpus = [free.pop(0) for _ in range(need)]
                        active.append(self._start(spec, run, lock, gpus, data_root, view))
                        pending.remove(spec)
                    for child in list(active):
                        if child.proc.poll() is None:
                            continue
                        active.remove(child)
                        state, msg = self._reap(child)
                        free.extend(child.gpus)
                        free.sort(key=self.slots.index)
                        self._finish(report, outcome_of, view, child.spec, child.run, state, msg, None)
                    view.update_active([(c.spec, c.last_line, time.time() - c.started) for c in active])
                    if active or pending:
                        time.sleep(POLL_S)
        except (KeyboardInterrupt, _Stop) as exc:
            signum = exc.signum if isinstance(exc, _Stop) else signal.SIGINT
            for child in active:
                state, msg = self._stop(child, signum)
                self._finish(report, outcome_of, view, child.spec, child.run, state, msg, None)
            raise ExecutionInterrupted(report, 128 + int(signum)) from None
        finally:
            if _main_thread() and old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        return report

    def _upstream_problem(self, spec: RunSpec, runs: dict[str, RunDir], outcome_of: dict[str, str],
                          runs_dir: Path) -> tuple[str, str] | str | None:
        """'wait' while an upstream run is still going, (state, message) once one cannot finish, else None."""
        for up in spec.depends_on:
            state = outcome_of.get(up)
            if state == "done":
                continue
            if state is None:
                if up not in runs and RunDir.of(runs_dir, up).is_finished():
                    continue
                if up in runs:
                    return "wait"
                return "failed", f"upstream run {up} is not part of this execution and has not finished"
            # a dependent of a run whose environment is missing is itself 'missing', not failed
            return ("missing" if state == "missing" else "failed"), f"upstream run {up} did not finish ({state})"
        return None

    def _finish(self, report: ExecutionReport, outcome_of: dict[str, str], view: "_Progress", spec: RunSpec,
                run: RunDir, state: str, message: str, pending: list[RunSpec] | None) -> None:
        report.outcomes.append(RunOutcome(spec.id, state, run.path, message))
        outcome_of[spec.id] = "done" if state in ("done", "skipped") else state
        if pending is not None and spec in pending:
            pending.remove(spec)
        view.finished(spec, state, message, run)

    def _start(self, spec: RunSpec, run: RunDir, lock, gpus: list[str], data_root: Path, view) -> Child:
        python = python_for(spec)
        cmd = self.command(python, spec, run, data_root, max(1, spec.gpus))
        log = open(run.log_path, "a", encoding="utf-8", buffering=1)
        pinned = f"  (CUDA_VISIBLE_DEVICES={','.join(gpus)})" if self.gpus is not None else ""
        log.write(f"\n==> {' '.join(cmd)}{pinned}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=child_env(python, gpus if self.gpus is not None else None, data_root),
                                errors="replace")
        child = Child(spec, run, proc, lock, gpus, log, threading.Thread(target=lambda: None))
        child.pump = threading.Thread(target=_pump, args=(child,), daemon=True)
        child.pump.start()
        view.started(spec)
        return child

    def _reap(self, child: Child) -> tuple[str, str]:
        child.pump.join(timeout=10)
        child.log.close()
        code = child.proc.returncode
        run = child.run
        try:
            if code == 0 and run.is_finished():
                return "done", ""
            status = run.status_record()
            if code == 3:
                return "missing", status.get("error") or child.last_line
            if code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
                if status.get("state") != "interrupted":
                    run.set_status("interrupted", exit_code=code)
                return "interrupted", "stopped; run reproduce again to resume"
            error = status.get("error") if status.get("state") == "failed" else None
            if not error:
                error = f"exited with code {code}" + (f" (killed by signal {-code})" if code < 0 else "")
                error += f"; last output: {child.last_line}" if child.last_line else ""
                run.set_status("failed", error=error, exit_code=code)
            return "failed", error
        finally:
            child.lock.release()

    def _stop(self, child: Child, signum: int) -> tuple[str, str]:
        """Let the child record 'interrupted' itself; escalate to SIGKILL if it does not stop."""
        proc = child.proc
        if proc.poll() is None:
            if signum == signal.SIGINT:
                try:  # the terminal's Ctrl-C usually reached the child already
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        state, msg = self._reap(child)
        if state not in ("done",):
            if child.run.status_record().get("state") != "interrupted":
                child.run.set_status("interrupted", exit_code=proc.returncode)
            return "interrupted", "stopped; run reproduce again to resume"
        return state, msg


def _pump(child: Child) -> None:
    assert child.proc.stdout is not None
    for line in child.proc.stdout:
        child.log.write(line)
        text = line.strip()
        if text:
            child.last_line = text[-160:]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_stop(signum, _frame):
    raise _Stop(signum)


class _Progress:
    """rich progress: runs done / total and what is running now; one printed line per finished run."""

    STYLE = {"done": "green", "skipped": "dim", "failed": "bold red", "missing": "yellow", "interrupted": "yellow",
             "busy": "cyan"}

    def __init__(self, console, total: int, skipped: int, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = console or Console(highlight=False)
        self.enabled = enabled
        self.total = total
        self.skipped = skipped
        self.done = 0
        self._said: set[str] = set()
        self._progress = None
        self._task = None

    def __enter__(self) -> "_Progress":
        if self.skipped:
            self.console.print(f"{self.skipped} run(s) already finished: skipped")
        if self.enabled and self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("runs"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"), console=self.console,
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def started(self, spec: RunSpec) -> None:
        if not self.enabled:
            return
        self.console.print(f"[dim]start[/] {_label(spec)} [dim]({spec.id})[/]")

    def finished(self, spec: RunSpec, state: str, message: str, run: RunDir) -> None:
        if state != "skipped":
            self.done += 1
            if self._progress is not None:
                self._progress.update(self._task, completed=self.done)
        if not self.enabled:
            return
        style = self.STYLE.get(state, "")
        extra = f": {message}" if message else ""
        if message and message in self._said:
            extra = ": (as above)"
        self._said.add(message)
        if state == "done":
            metrics = (run.metrics() or {}).get("metrics", {})
            extra = "  " + "  ".join(f"{k} {v:.3f}" for k, v in list(metrics.items())[:4])
        self.console.print(f"[{style}]{state:>11}[/] {_label(spec)}{extra}", markup=True, highlight=False)

    def update_active(self, active: list[tuple[RunSpec, str, float]]) -> None:
        if self._progress is None:
            return
        if not active:
            desc = ""
        else:
            spec, line, secs = active[0]
            more = f" (+{len(active) - 1} more)" if len(active) > 1 else ""
            desc = f"{_label(spec)}{more} · {_short(line)}"
        self._progress.update(self._task, description=desc)


def _label(spec: RunSpec) -> str:
    lr = spec.hparams.get("lr")
    return f"{spec.backbone} / {spec.dataset} / {spec.recipe}" + (f" lr {lr:g}" if isinstance(lr, float) else "")


def _short(line: str, width: int = 60) -> str:
    parts = line.split(" ", 2)
    text = parts[2] if len(parts) == 3 and parts[0].count("-") == 2 else line  # drop the log timestamp
    return text if len(text) <= width else text[: width - 1] + "…"

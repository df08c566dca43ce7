"""What one Slurm array task runs on its node: `bobkit run-one` for one RunSpec, and its requeue.

submitit pickles a SlurmRunTask at submission and calls it on the node, in the submitting Python
environment (bobkit + submitit, no torch needed: the run itself happens in the container). On
USR2 (preemption, or the time limit is near) submitit calls checkpoint(): the run is stopped, its
status says "requeued", and submitit requeues the same job; the runner then resumes from
checkpoints/last.pt. A failed run leaves status "failed" with its log path and exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from bobkit.errors import RunFailed
from bobkit.exec.container_cmd import Launch, command_for, remove_argv, shell_line, stop_argv
from bobkit.exec.slurm import now, read_record, update_record, update_status
from bobkit.results import RunDir


class SlurmRunTask(Checkpointable):
    """Holds only paths and the Launch, so the pickle is small and the same on every requeue."""

    def __init__(self, run_dir: Path, launch: Launch, grace_s: int = 60) -> None:
        self.run_dir = Path(run_dir)
        self.launch = launch
        self.grace_s = grace_s
        self._child: subprocess.Popen | None = None
        self._stopping = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "launch": self.launch, "grace_s": self.grace_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._child, self._stopping = None, ""

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """submitit's USR2 handler: stop the run (its last checkpoint stays) and requeue this same task."""
        self._stopping = "requeued"
        self._stop_child()
        run = RunDir(self.run_dir)
        if not run.is_finished():
            run.set_status("requeued", executor="slurm", job_id=task_job_id(), at=now(),
                           message="preempted or near its time limit; resumes from checkpoints/last.pt")
            record = read_record(run)
            update_record(run, requeues=int(record.get("requeues", 0)) + 1)
        return DelayedSubmission(self, *args, **kwargs)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """scancel, or a preemption without USR2: stop the run's container too (docker does not see Slurm)."""
        if not self._stopping:
            self._stopping = "interrupted"
        self._stop_child()

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        stop = stop_argv(self.launch, grace_s=min(self.grace_s, 30))
        try:
            if stop:
                subprocess.run(stop, capture_output=True, timeout=self.grace_s)
            else:
                child.terminate()
            child.wait(timeout=self.grace_s)
        except (subprocess.TimeoutExpired, OSError):
            child.kill()

    def __call__(self) -> dict[str, float]:
        run = RunDir(self.run_dir)
        if run.is_finished():  # a requeue that arrived after the run had finished
            return (run.metrics() or {}).get("metrics", {})
        job_id = task_job_id()
        attempt = int(read_record(run).get("attempt", 0)) + 1
        launch = with_runtime_digest(self.launch)
        argv, env = command_for(launch, os.environ)
        gpus = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES") or ""
        update_record(run, job_id=job_id, attempt=attempt, host=socket.gethostname(), started=now(),
                      command=shell_line(argv), gpus=gpus)
        run.set_status("running", executor="slurm", job_id=job_id, attempt=attempt)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        rc = self._run(argv, env, run)
        if run.is_finished():  # metrics.json is the result, even if a signal ended the process after it
            update_status(run, state="done", finished=now())
            return (run.metrics() or {}).get("metrics", {})
        if self._stopping == "requeued":  # the handler requeues and exits; nothing to record here
            sys.exit(0)
        state = "interrupted" if self._stopping else "failed"
        message = ("stopped by a signal (scancel, preemption, node failure)" if self._stopping else
                   f"bobkit run-one exited with {rc}" + ("" if rc else " without writing metrics.json"))
        update_status(run, state=state, exit_code=rc, finished=now(), message=message, job_id=job_id)
        raise RunFailed(f"run {run.path.name} {state}: {message}; see {run.log_path}")

    def _run(self, argv: list[str], env: dict[str, str], run: RunDir) -> int:
        run.path.mkdir(parents=True, exist_ok=True)
        with open(run.log_path, "ab", buffering=0) as log:
            log.write(f"\n[bobkit slurm] job {task_job_id()} on {socket.gethostname()}: "
                      f"{shell_line(argv)}\n".encode())
            try:
                self._child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)
            except FileNotFoundError:
                log.write(f"[bobkit slurm] {argv[0]} not found on {socket.gethostname()}\n".encode())
                return 127
            try:
                # poll, not wait(): a blocking wait() holds Popen's lock, and the signal handlers
                # (which run in this thread) must be able to wait for the child themselves
                while self._child.poll() is None:
                    time.sleep(0.5)
                return self._child.returncode
            finally:
                rm = remove_argv(self.launch)
                if rm and self._child.returncode is None:  # leaving by an exception: no orphan container
                    subprocess.run(rm, capture_output=True, timeout=60)


def with_runtime_digest(launch: Launch) -> Launch:
    """Docker/Podman: the image id on this node goes into provenance as BOBKIT_IMAGE_DIGEST."""
    if launch.runtime not in ("docker", "podman") or any(k == "BOBKIT_IMAGE_DIGEST" for k, _ in launch.env):
        return launch
    try:
        out = subprocess.run([launch.binary or launch.runtime, "image", "inspect", "--format", "{{.Id}}",
                              launch.image], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return launch
    if out.returncode != 0 or not out.stdout.strip():
        return launch
    return replace(launch, env=tuple(sorted([*launch.env, ("BOBKIT_IMAGE_DIGEST", out.stdout.strip())])))


def _ignore_usr2() -> None:
    # USR2 is the task wrapper's cue; the run stops when the wrapper says so (after its checkpoint).
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def task_job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")

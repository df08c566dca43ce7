"""`bobkit run-one RUN_DIR/spec.json`: run one RunSpec here and write its metrics.json.

This is what every executor runs (on the host, in a container, in a Slurm task). It checks the
spec and its upstream runs, marks the run `running`, calls the task runner, and writes
metrics.json (metrics + provenance) atomically before marking it `done`. A failure leaves
status `failed` with the error (exit 4; 3 when something is missing from the environment);
Ctrl-C or SIGTERM leaves `interrupted` (exit 130 / 143) with the checkpoints kept, so running the
same spec again resumes.

Logs go to stdout and to <run_dir>/log.txt (unless BOBKIT_LOG_CAPTURED=1: then the executor
that started this process writes everything it prints into log.txt itself).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from bobkit.errors import BadInput, BobkitError, EnvironmentMissing, ExitCode, RunFailed
from bobkit.results import RunDir, atomic_write_json, read_json

log = logging.getLogger("bobkit.run")

LOG_CAPTURED = "BOBKIT_LOG_CAPTURED"
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: the run stops, keeps its checkpoints, and can be resumed."""

    def __init__(self, exit_code: int, why: str) -> None:
        super().__init__(why)
        self.exit_code = exit_code


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def load_spec(spec_path: Path):
    """The RunSpec of a spec.json, checked against its own id (an edited spec is refused)."""
    from bobkit.plan import RunSpec, run_id

    spec_path = Path(spec_path)
    raw = read_json(spec_path)
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise BadInput(f"{spec_path}: not a valid RunSpec, field '{loc}': {err['msg']}; "
                       "regenerate it with `bobkit reproduce` or `bobkit plan --json`") from None
    expected = run_id(spec.content())
    if expected != spec.id:
        raise BadInput(f"{spec_path}: the spec was edited after planning (its content hashes to {expected}, "
                       f"not its id {spec.id}); plan it again instead of editing spec.json")
    try:
        spec.typed_hparams()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise BadInput(f"{spec_path}: hparams.{loc} does not validate against the {spec.protocol} schema: "
                       f"{err['msg']}; plan it again with this bobkit") from None
    return spec


def check_upstream(spec, run: RunDir) -> None:
    for up_id in spec.depends_on:
        up = RunDir(run.path.parent / up_id)
        if not up.is_finished():
            raise EnvironmentMissing(f"run {spec.id} reads the checkpoint of run {up_id}, which has not finished "
                                     f"({up.path}: {up.status()}); run `bobkit reproduce {spec.experiment}` to run "
                                     "both in order")


@contextmanager
def run_logging(run: RunDir, main: bool) -> Iterator[None]:
    """Log lines to stdout and (main rank, unless the executor captures output) to log.txt."""
    logger = logging.getLogger("bobkit")
    old_level, old_propagate = logger.level, logger.propagate
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if main and os.environ.get(LOG_CAPTURED) != "1":
        handlers.append(logging.FileHandler(run.log_path, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.setLevel(logging.INFO if main else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        for h in handlers:
            h.flush()
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


@contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise Interrupted, so the run can record its state before exiting."""
    def on_signal(signum, _frame):
        raise Interrupted(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT, signal.Signals(signum).name)

    if threading_main():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    else:
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict) or not metrics:
        raise RunFailed(f"the runner returned no metrics ({metrics!r})")
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise RunFailed(f"the runner returned a non-finite or non-numeric metric {k}={v!r}")
        out[str(k)] = float(v)
    return out


def load_runner(spec, runner_for):
    """The task's runner; a library this environment lacks is 'environment missing' (exit 3)."""
    try:
        return runner_for(spec.task)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing.startswith("bobkit"):
            raise RunFailed(f"run {spec.id}: this bobkit has no runner for task '{spec.task}' ({missing} is missing)") from None
        raise EnvironmentMissing(f"run {spec.id}: the {spec.task} runner needs '{missing}', which {sys.executable} "
                                 f"cannot import; install the {spec.image_family} environment (or run it in the "
                                 f"{spec.image} image)") from None


def run_one(spec_path: Path, data_root: Path | None = None) -> dict[str, Any]:
    """Run one spec; returns the metrics.json record. Raises BobkitError or Interrupted."""
    from bobkit import provenance
    from bobkit.data import default_data_root
    from bobkit.tasks import runner_for

    spec_path = Path(spec_path).resolve()
    spec = load_spec(spec_path)
    run = RunDir(spec_path.parent)
    if run.is_finished():
        print(f"run {spec.id} already finished: {run.metrics_path}")
        return read_json(run.metrics_path)
    root = Path(data_root) if data_root is not None else default_data_root()
    main = rank() == 0
    started = provenance.now()
    with run_logging(run, main), interrupts_as_exceptions():
        if main:
            run.set_status("running", pid=os.getpid(), started=started, host=provenance.socket.gethostname())
        log.info("run %s: %s / %s / %s (%s%s)", spec.id, spec.experiment, spec.backbone, spec.dataset, spec.recipe,
                 ", smoke" if spec.smoke else "")
        try:
            check_upstream(spec, run)
            runner = load_runner(spec, runner_for)
            metrics = check_metrics(runner(spec, run, root))
        except Interrupted as exc:
            log.info("interrupted (%s): checkpoints kept in %s; run the same spec again to resume", exc, run.checkpoints)
            if main:
                run.set_status("interrupted", signal=str(exc), at=provenance.now())
            raise
        except KeyboardInterrupt:
            log.info("interrupted (Ctrl-C): checkpoints kept in %s", run.checkpoints)
            if main:
                run.set_status("interrupted", signal="SIGINT", at=provenance.now())
            raise Interrupted(EXIT_SIGINT, "SIGINT") from None
        except BobkitError as exc:
            log.error("error: %s", exc)
            if main:
                run.set_status("failed", error=str(exc), exit_code=int(exc.exit_code), at=provenance.now())
            raise
        except Exception as exc:  # a bug or a library failure: keep the traceback in the log
            log.error("run failed:\n%s", traceback.format_exc())
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
            if main:
                run.set_status("failed", error=message, exit_code=int(ExitCode.RUN_FAILED), at=provenance.now())
            raise RunFailed(f"run {spec.id} failed: {message} (traceback in {run.log_path})") from None
        finished = provenance.now()
        record = {
            "run_id": spec.id, "experiment": spec.experiment, "backbone": spec.backbone, "dataset": spec.dataset,
            "recipe": spec.recipe, "task": spec.task, "protocol": spec.protocol, "smoke": spec.smoke,
            "metrics": metrics, "provenance": provenance.collect(spec, run.path, started, finished),
        }
        if main:
            atomic_write_json(run.metrics_path, record)
            run.set_status("done", finished=finished)
            log.info("done: %s", "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return record

"""Run directories: where a run's spec, metrics, log and checkpoints live, written atomically.

runs/<experiment>/<run id>/{spec.json, metrics.json, status.json, log.txt, checkpoints/}
A run is finished when metrics.json exists; nothing else is ever taken as a result.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bobkit.errors import BadInput

SPEC = "spec.json"
METRICS = "metrics.json"
STATUS = "status.json"
LOG = "log.txt"
CHECKPOINTS = "checkpoints"


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask sets it, which races
    with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path, suffix: str = "", fsync: bool = True) -> Iterator[str]:
    """A temporary path in `path`'s folder to write to; when the block ends it is fsynced and renamed
    onto `path`, so readers never see half a file; on an error it is removed. `suffix` is for writers
    that append one themselves (np.save adds .npy). The file gets the permissions a plain open() would
    give (mkstemp's are 0600): a lab shares its runs folder, results and reports."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, runs_dir: Path, experiment: str, run_id: str) -> "RunDir":
        return cls(Path(runs_dir) / experiment / run_id)

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def status(self) -> str:
        """done, failed, interrupted, running, or pending."""
        return "done" if self.is_finished() else self.status_record().get("state", "pending")

    def status_record(self) -> dict[str, Any]:
        """status.json's contents (state, and what the writer added: error, pid, exit code, ...); {} when
        there is none yet or it cannot be read."""
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def live_status(self) -> str:
        """status(), except that a run marked running by a process of this host that no longer exists is
        "stale" (killed hard: no chance to mark itself interrupted). Runs on other hosts or in containers
        keep "running": their process cannot be seen from here."""
        if self.is_finished():
            return "done"
        st = self.status_record()
        state = st.get("state", "pending")
        if state != "running":
            return state
        import socket

        pid = st.get("pid")
        if st.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
            return state
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "stale"
        except PermissionError:  # alive, owned by another user
            return state
        return state

    def set_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(self.status_path, {"state": state, **extra})

    def write_spec(self, spec_json: dict[str, Any]) -> None:
        if self.spec_path.is_file():
            from bobkit.plan import run_id

            existing = read_json(self.spec_path)
            # the same run planned by another experiment: only what the id hashes must agree
            if not isinstance(existing, dict) or existing.get("id") != spec_json.get("id") \
                    or run_id(existing) != run_id(spec_json):
                raise BadInput(f"{self.spec_path}: a different spec already lives under this run id; "
                               "remove the folder or use another --runs-dir")
            return
        atomic_write_json(self.spec_path, spec_json)

    def metrics(self) -> dict[str, Any] | None:
        return read_json(self.metrics_path) if self.is_finished() else None


def iter_runs(runs_dir: Path, experiment: str | None = None) -> Iterator[RunDir]:
    """Every run directory (one holding spec.json) under runs_dir, optionally of one experiment."""
    root = Path(runs_dir)
    if not root.is_dir():
        return
    exps = [root / experiment] if experiment else sorted(p for p in root.iterdir() if p.is_dir())
    for exp_dir in exps:
        if not exp_dir.is_dir():
            continue
        for run in sorted(exp_dir.iterdir()):
            if (run / SPEC).is_file():
                yield RunDir(run)


def finished_results(runs_dir: Path, experiment: str | None = None) -> list[dict[str, Any]]:
    """One flat record per finished run: its spec's keys plus its metrics."""
    rows = []
    for run in iter_runs(runs_dir, experiment):
        m = run.metrics()
        if m is None:
            continue
        spec = read_json(run.spec_path)
        rows.append({
            "run_id": spec["id"], "experiment": spec["experiment"], "backbone": spec["backbone"],
            "dataset": spec["dataset"], "recipe": spec["recipe"], "task": spec["task"],
            "protocol": spec["protocol"], "lr": spec["hparams"].get("lr"), "seed": spec["seed"],
            "smoke": spec.get("smoke", False), "metrics": m.get("metrics", {}),
        })
    return rows

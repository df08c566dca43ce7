"""Run directories: where a run's spec, metrics, log and checkpoints live, written atomically.

A run lives in one folder named by its id, whichever experiments need it:

    runs/<run id>/{spec.json, metrics.json, status.json, log.txt, checkpoints/, previous/}
    runs/experiments/<experiment>.json     {"experiment": ..., "runs": [sorted run ids]}

The index of an experiment lists the runs it needs; a run shared by two experiments runs once and
serves both. `previous/` keeps the results of earlier attempts (`reproduce --force`, migration).
Runs folders of the old layout, runs/<experiment>/<run id>/, are still read (they keep the
experiment of their folder) until `bobkit runs migrate` moves them.
A run is finished when metrics.json exists; nothing else is ever taken as a result.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from bobkit.errors import BadInput

SPEC = "spec.json"
METRICS = "metrics.json"
STATUS = "status.json"
LOG = "log.txt"
CHECKPOINTS = "checkpoints"
PREVIOUS = "previous"
INDEX_DIR = "experiments"  # runs/experiments/<experiment>.json
# What one attempt at a run leaves behind; set aside together when the run starts again from scratch
# (checkpoints first and metrics.json last, so a half-done move never leaves a result without its files).
ATTEMPT_FILES = (CHECKPOINTS, LOG, "slurm.json", STATUS, METRICS)
RUN_ID = re.compile(r"[0-9a-f]{16}")


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
    def of(cls, runs_dir: Path, run_id: str) -> "RunDir":
        """The folder of a run: runs/<run id>/ (the one place that decides it)."""
        return cls(Path(runs_dir) / run_id)

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

    @property
    def previous(self) -> Path:
        """Where earlier attempts of this run are kept (previous/<UTC timestamp or old run id>/)."""
        return self.path / PREVIOUS

    def spec(self) -> dict[str, Any]:
        return read_json(self.spec_path)

    def set_aside(self, label: str | None = None) -> Path | None:
        """Move what an attempt left (metrics.json, status.json, log.txt, slurm.json, checkpoints/) into
        previous/<label, default the UTC time>/, so the run starts again from scratch and nothing is
        deleted. Returns that folder, or None when there was nothing to move."""
        present = [name for name in ATTEMPT_FILES if (self.path / name).exists()]
        if not present:
            return None
        dest = free_path(self.previous / (label or utc_stamp()))
        dest.mkdir(parents=True)
        for name in present:
            os.replace(self.path / name, dest / name)
        return dest

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


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def free_path(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when it is taken."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


# ---------------------------------------------------------------- experiment indexes

def index_path(runs_dir: Path, experiment: str) -> Path:
    """The index of the runs an experiment needs: runs/experiments/<experiment>.json (the one place that decides it)."""
    if not experiment or "/" in experiment or "\\" in experiment or experiment.startswith("."):
        raise BadInput(f"experiment id {experiment!r} cannot name its index file under {Path(runs_dir) / INDEX_DIR}; "
                       "use an id without '/' that does not start with '.'")
    return Path(runs_dir) / INDEX_DIR / f"{experiment}.json"


def read_index(runs_dir: Path, experiment: str) -> dict[str, Any]:
    """{"experiment", "runs": [ids], and "migrated": {old id: new id} after `bobkit runs migrate`};
    an experiment without an index has no runs."""
    path = index_path(runs_dir, experiment)
    if not path.is_file():
        return {"experiment": experiment, "runs": []}
    data = read_json(path)
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, str) and r and "/" not in r and r not in (".", "..")
                                             for r in runs):
        raise BadInput(f"{path}: not an experiment index (expected {{\"experiment\": ..., \"runs\": [run ids]}}); "
                       "remove it and run `bobkit reproduce` again to rebuild it")
    return data


def indexed_experiments(runs_dir: Path) -> list[str]:
    folder = Path(runs_dir) / INDEX_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))


def add_to_index(runs_dir: Path, experiment: str, run_ids: Iterable[str],
                 migrated: dict[str, str] | None = None) -> dict[str, Any]:
    """Add run ids (and old → new id pairs of a migration) to an experiment's index: read, merged (union)
    and written atomically under a file lock, so filtered and concurrent invocations add up."""
    from filelock import FileLock, Timeout

    path = index_path(runs_dir, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"), timeout=120)
    try:
        lock.acquire()
    except Timeout:
        from bobkit.errors import EnvironmentMissing

        raise EnvironmentMissing(f"{lock.lock_file}: another bobkit process has held this index lock for 120 s; "
                                 "let it finish (or remove the lock file if none runs) and try again") from None
    try:
        data = read_index(runs_dir, experiment)
        merged = sorted(set(data["runs"]) | set(run_ids))
        moved = {**data.get("migrated", {}), **(migrated or {})}
        if merged == sorted(data["runs"]) and moved == data.get("migrated", {}) and path.is_file():
            return data
        data = {**data, "experiment": experiment, "runs": merged}
        if moved:
            data["migrated"] = dict(sorted(moved.items()))
        atomic_write_json(path, data)
        return data
    finally:
        lock.release()


def index_specs(runs_dir: Path, specs: Iterable[Any]) -> None:
    """Every planned spec into the index of the experiment that planned it."""
    by_exp: dict[str, set[str]] = {}
    for s in specs:
        by_exp.setdefault(s.experiment, set()).add(s.id)
    for exp, ids in sorted(by_exp.items()):
        add_to_index(runs_dir, exp, ids)


# ---------------------------------------------------------------- finding runs

def _scan(root: Path) -> tuple[list[RunDir], list[tuple[str, RunDir]]]:
    """The run folders of the shared layout (runs/<id>/spec.json), and those of the old layout as
    (experiment, run) pairs (runs/<experiment>/<id>/spec.json)."""
    shared: list[RunDir] = []
    old: list[tuple[str, RunDir]] = []
    if not root.is_dir():
        return shared, old
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or child.name == INDEX_DIR or not child.is_dir():
            continue
        if (child / SPEC).is_file():
            shared.append(RunDir(child))
            continue
        try:
            subs = sorted(child.iterdir())
        except OSError:
            continue
        old += [(child.name, RunDir(sub)) for sub in subs if sub.is_dir() and (sub / SPEC).is_file()]
    return shared, old


def old_layout_runs(runs_dir: Path, experiment: str | None = None) -> list[tuple[str, RunDir]]:
    """(experiment, run) of every run folder still in the old layout, runs/<experiment>/<run id>/."""
    _, old = _scan(Path(runs_dir))
    return [(e, r) for e, r in old if experiment is None or e == experiment]


def _planned_by(run: RunDir) -> str | None:
    try:
        spec = json.loads(run.spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    exp = spec.get("experiment") if isinstance(spec, dict) else None
    return exp if isinstance(exp, str) and exp else None


def find_run(runs_dir: Path, run_id: str) -> RunDir | None:
    """The folder of a run id: runs/<id>/, else an old-layout runs/<experiment>/<id>/; None if neither."""
    run = RunDir.of(runs_dir, run_id)
    if run.spec_path.is_file():
        return run
    for _, old in old_layout_runs(runs_dir):
        if old.path.name == run_id:
            return old
    return None


def experiment_runs(runs_dir: Path, experiment: str | None = None) -> list[tuple[str, RunDir]]:
    """(experiment, run) for every run an experiment's index lists (all experiments when None), a run
    shared by two experiments once under each. Also found: run folders no index lists (under the
    experiment their spec.json names) and old-layout folders (under their folder's experiment)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    shared, old = _scan(root)
    indexed: set[str] = set()
    pairs: list[tuple[str, RunDir]] = []
    for exp in indexed_experiments(root):
        ids = read_index(root, exp)["runs"]
        indexed.update(ids)
        if experiment is None or exp == experiment:
            pairs += [(exp, run) for run in map(lambda i: RunDir.of(root, i), ids) if run.spec_path.is_file()]
    for run in shared:
        if run.path.name not in indexed:
            exp = _planned_by(run)
            if exp and (experiment is None or exp == experiment):
                pairs.append((exp, run))
    pairs += [(e, r) for e, r in old if experiment is None or e == experiment]
    return sorted(pairs, key=lambda p: (p[0], str(p[1].path)))


def iter_runs(runs_dir: Path, experiment: str | None = None) -> Iterator[RunDir]:
    """Every run folder of an experiment (all when None), each once; see experiment_runs()."""
    seen: set[Path] = set()
    for _, run in experiment_runs(runs_dir, experiment):
        if run.path not in seen:
            seen.add(run.path)
            yield run


def finished_results(runs_dir: Path, experiment: str | None = None) -> list[dict[str, Any]]:
    """One flat record per finished run of an experiment: its spec's keys plus its metrics. A run shared by
    several experiments gives one record per experiment, each under that experiment's name (spec.json's
    `experiment` only says which planned it first); experiment=None gives every (experiment, run)."""
    rows = []
    for exp, run in experiment_runs(runs_dir, experiment):
        m = run.metrics()
        if m is None:
            continue
        spec = read_json(run.spec_path)
        rows.append({
            "run_id": spec["id"], "experiment": exp, "backbone": spec["backbone"],
            "dataset": spec["dataset"], "recipe": spec["recipe"], "task": spec["task"],
            "protocol": spec["protocol"], "lr": spec["hparams"].get("lr"), "seed": spec["seed"],
            "smoke": spec.get("smoke", False), "metrics": m.get("metrics", {}), "run_dir": str(run.path),
            "user_set": spec.get("user_set") or {},
        })
    return rows

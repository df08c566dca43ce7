"""`bobkit runs migrate`: move run folders of the old layout into the shared one.

Old layout: runs/<experiment>/<run id>/, whose id hashed the experiment too. Shared layout:
runs/<run id>/ with the id of the run's content only (bobkit.plan.run_id), listed in the index
runs/experiments/<experiment>.json. Each old folder gets its id recomputed from its spec.json
(upstream runs first, so `depends_on` is rewritten with their new ids), its spec.json's `id`
rewritten, and is moved to runs/<new id>/. Nothing is deleted: when runs/<new id>/ already exists
(the same run finished by another experiment or migrated from another experiment folder), the
finished one stays and the other is moved into runs/<new id>/previous/ (the old folder as
previous/<old id>/, a displaced unfinished attempt as previous/<UTC timestamp>/).
Runs still going (a live process, a held lock, queued on Slurm) are left where they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobkit.results import RunDir, add_to_index, atomic_write_json, free_path, old_layout_runs, read_index, utc_stamp

BUSY_STATES = ("running", "queued", "requeued")


@dataclass
class Move:
    """What migration does (or did) with one old-layout folder."""

    experiment: str
    old_id: str
    source: Path
    action: str  # moved, set aside, replaced, left
    new_id: str | None = None
    dest: Path | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "old_id": self.old_id, "new_id": self.new_id, "action": self.action,
                "source": str(self.source), "dest": str(self.dest) if self.dest else None, "message": self.message}


def _busy(run: RunDir) -> str | None:
    """Why a run must not be moved now, or None."""
    from bobkit.exec.scheduler import CLAIM, claimed_elsewhere

    if (run.path / CLAIM).exists() and claimed_elsewhere(run.path):
        return f"another bobkit process holds {run.path / CLAIM} (running it?); migrate again once it has stopped"
    state = run.live_status()
    if state in BUSY_STATES:
        return f"it is marked {state} ({run.status_path}); migrate again once it has stopped"
    return None


def _upstream_first(runs: dict[str, tuple[RunDir, dict[str, Any]]]) -> list[str]:
    """Old ids, each after the old ids of its upstream runs in the same experiment folder."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(old_id: str) -> None:
        if old_id in seen:
            return
        seen.add(old_id)
        for up in runs[old_id][1].get("depends_on") or []:
            if isinstance(up, str) and up in runs:
                visit(up)
        order.append(old_id)

    for old_id in sorted(runs):
        visit(old_id)
    return order


def _new_spec(raw: Any, mapping: dict[str, str], pending_old: set[str]) -> tuple[dict[str, Any] | None, str]:
    """The spec with rewritten depends_on and id, or (None, why not)."""
    from pydantic import ValidationError

    from bobkit.plan import RunSpec, run_id

    if not isinstance(raw, dict):
        return None, "spec.json is not a JSON object"
    deps = raw.get("depends_on") or []
    if not isinstance(deps, list):
        return None, "spec.json's depends_on is not a list"
    unmigrated = [d for d in deps if d not in mapping and d in pending_old]
    if unmigrated:
        return None, f"its upstream run {unmigrated[0]} was left in place, so its depends_on cannot be rewritten"
    try:
        spec = RunSpec.model_validate({**raw, "id": "0" * 16, "depends_on": [mapping.get(d, d) for d in deps]})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return None, (f"spec.json is not a RunSpec of this bobkit (field '{loc}': {err['msg']}); it stays readable "
                      "where it is")
    # the id of the content as this bobkit reads it (defaults of fields an older spec.json lacks included)
    return spec.model_copy(update={"id": run_id(spec.content())}).model_dump(mode="json"), ""


def _read_spec(run: RunDir) -> Any:
    import json

    try:
        return json.loads(run.spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def migrate_runs(runs_dir: Path, dry_run: bool = False) -> list[Move]:
    """Move every old-layout run folder under runs_dir into the shared layout (see the module docstring).
    With dry_run nothing is touched, and the moves say what would happen."""
    root = Path(runs_dir)
    by_exp: dict[str, dict[str, tuple[RunDir, Any]]] = {}
    for exp, run in old_layout_runs(root):
        by_exp.setdefault(exp, {})[run.path.name] = (run, _read_spec(run))
    moves: list[Move] = []
    # runs/<new id>/ as the migration goes (a dry run moves nothing): finished (True) or not (False)
    present: dict[str, bool] = {}
    for exp in sorted(by_exp):
        runs = by_exp[exp]
        mapping: dict[str, str] = dict(read_index(root, exp).get("migrated") or {})  # earlier migrations too
        left: set[str] = set(runs)  # old ids still in the old folder
        moved: dict[str, str] = {}
        specs = {k: (run, raw if isinstance(raw, dict) else {}) for k, (run, raw) in runs.items()}
        for old_id in _upstream_first(specs):
            run, raw = runs[old_id]
            move = Move(exp, old_id, run.path, "left")
            moves.append(move)
            body, why = _new_spec(raw, mapping, left - {old_id})
            busy = None if body is None else _busy(run)
            if body is None or busy:
                move.message = why or busy or ""
                continue
            new_id = move.new_id = body["id"]
            dest = RunDir.of(root, new_id)
            if new_id in present:
                state: bool | None = present[new_id]
            else:
                state = dest.is_finished() if dest.path.exists() else None
            dest_busy = _busy(dest) if state is not None and dest.path.is_dir() else None
            if state is None:
                move.action, move.dest = "moved", dest.path
                if not dry_run:
                    os.replace(run.path, dest.path)
                    atomic_write_json(dest.spec_path, body)
                present[new_id] = run.is_finished()
            elif state or dest_busy or not run.is_finished():
                # runs/<new id>/ stays as it is; the old folder is kept inside it
                target = free_path(dest.previous / old_id)
                why = "finished" if state else ("in use" if dest_busy else "neither is finished")
                move.action, move.dest = "set aside", target
                move.message = f"{dest.path} already holds this run ({why}); the old folder is kept inside it"
                if not dry_run:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(run.path, target)
            else:  # the old folder holds a result, runs/<new id>/ an unfinished attempt: the result takes its place
                displaced = free_path(dest.previous / utc_stamp())
                move.action, move.dest = "replaced", dest.path
                move.message = f"its unfinished attempt there is kept as {displaced}"
                if not dry_run:
                    tmp = free_path(root / f".{new_id}.displaced")
                    os.replace(dest.path, tmp)
                    os.replace(run.path, dest.path)
                    dest.previous.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, displaced)
                    atomic_write_json(dest.spec_path, body)
                present[new_id] = True
            mapping[old_id] = moved[old_id] = new_id
            left.discard(old_id)
        if not dry_run and moved:
            add_to_index(root, exp, moved.values(), migrated=moved)
            try:
                (root / exp).rmdir()  # only when nothing is left in it
            except OSError:
                pass
    return moves


def old_layout_note(runs_dir: Path, shown: str | None = None) -> str | None:
    """The one line `reproduce` and `status` print while old-layout runs exist, else None."""
    old = old_layout_runs(runs_dir)
    if not old:
        return None
    counts: dict[str, int] = {}
    for exp, _ in old:
        counts[exp] = counts.get(exp, 0) + 1
    name = shown or str(runs_dir)
    where = ", ".join(f"{name}/{exp}/" for exp in sorted(counts))
    n = len(old)
    flag = "" if Path(runs_dir) == Path("runs") else f" --runs-dir {runs_dir}"
    return (f"{n} run{'s' if n != 1 else ''} in the old layout under {where}; `bobkit runs migrate{flag}` moves "
            "them into the shared layout")

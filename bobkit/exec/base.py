"""What every executor shares: the run directory is prepared the same way and results land the same way.

An executor receives RunSpecs in dependency order, skips finished runs (metrics.json present),
writes spec.json into each run directory (runs/<run id>/, shared by every experiment that plans
the run), adds the runs to their experiment's index (runs/experiments/<experiment>.json), and
arranges for `bobkit run-one <run_dir>/spec.json` to run with BOBKIT_DATA pointing at the data
root. verify and report never care which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from bobkit.plan import RunSpec
from bobkit.results import RunDir, index_specs


@dataclass
class RunOutcome:
    run_id: str
    state: str  # done, skipped, failed, interrupted
    run_dir: Path
    message: str = ""


@dataclass
class ExecutionReport:
    outcomes: list[RunOutcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.state in ("failed", "interrupted")]


class Executor(Protocol):
    name: str

    def execute(self, specs: Sequence[RunSpec], runs_dir: Path, data_root: Path) -> ExecutionReport: ...


def prepare(spec: RunSpec, runs_dir: Path) -> RunDir:
    """Create the run directory and its spec.json (refusing a different spec under the same id); a run
    already planned by another experiment keeps its folder and spec.json."""
    run = RunDir.of(runs_dir, spec.id)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_spec(spec.model_dump(mode="json"))
    return run


def prepare_runs(specs: Sequence[RunSpec], runs_dir: Path) -> tuple[list[RunSpec], dict[str, RunDir]]:
    """Every run directory prepared, upstream runs first, and every run in its experiment's index: the
    specs in dependency order and the RunDir of each by id."""
    ordered = order_by_dependencies(specs)
    runs = {spec.id: prepare(spec, runs_dir) for spec in ordered}
    index_specs(runs_dir, ordered)
    return ordered, runs


def prepare_all(specs: Sequence[RunSpec], runs_dir: Path) -> tuple[ExecutionReport, dict[str, RunDir], list[RunSpec]]:
    """Every run directory prepared (prepare_runs): a report holding the finished ones as skipped, the RunDir
    of each run by id, and the specs still to run (in dependency order)."""
    report = ExecutionReport()
    pending: list[RunSpec] = []
    ordered, runs = prepare_runs(specs, runs_dir)
    for spec in ordered:
        run = runs[spec.id]
        if run.is_finished():
            report.outcomes.append(RunOutcome(spec.id, "skipped", run.path, "already finished"))
        else:
            pending.append(spec)
    return report, runs, pending


def order_by_dependencies(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """Upstream runs before the runs that read their checkpoints (stable otherwise)."""
    by_id = {s.id: s for s in specs}
    done: set[str] = set()
    out: list[RunSpec] = []

    def visit(s: RunSpec) -> None:
        if s.id in done:
            return
        done.add(s.id)
        for d in s.depends_on:
            if d in by_id:
                visit(by_id[d])
        out.append(s)

    for s in specs:
        visit(s)
    return out

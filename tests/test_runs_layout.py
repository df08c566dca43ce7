"""The runs folder's layout: one folder per run id (runs/<id>/), experiment indexes (runs/experiments/),
old-layout folders (runs/<experiment>/<id>/) still read, and `bobkit runs migrate`. No training here:
finished runs are written as the runners leave them (spec.json + metrics.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bobkit.errors import BadInput
from bobkit.exec.base import prepare, prepare_all
from bobkit.migrate import migrate_runs, old_layout_note
from bobkit.plan import RunSpec, canonical_json, run_id
from bobkit.results import (RunDir, add_to_index, experiment_runs, finished_results, index_path, iter_runs,
                            old_layout_runs, read_index)
from bobkit.runone import load_spec
from tests._classification_support import make_spec, mini_catalog
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return mini_catalog(tmp_path_factory.mktemp("manifests"))


def as_planned_by(spec: RunSpec, experiment: str) -> RunSpec:
    """The same run as another experiment plans it: same id, another `experiment` field."""
    return spec.model_copy(update={"experiment": experiment})


def finish(run: RunDir, top1: float = 0.5) -> None:
    run.metrics_path.write_text(json.dumps({"run_id": run.path.name, "metrics": {"top1": top1}}))
    run.status_path.write_text(json.dumps({"state": "done"}))
    run.log_path.write_text("done\n")
    run.checkpoints.mkdir(exist_ok=True)
    (run.checkpoints / "final.pt").write_bytes(b"weights")


def old_id_of(body: dict) -> str:
    """The run id rule before run ids left the experiment out: every field but `id` hashed."""
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k != "id"}).encode()).hexdigest()[:16]


def write_old_layout(runs: Path, spec: RunSpec, depends_on: list[str] = (), finished: bool = True,
                     top1: float = 0.5) -> RunDir:
    """A run folder as the old bobkit left it: runs/<experiment>/<old id>/ with the old id in spec.json (and
    no `origins`, a field it did not have)."""
    body = spec.model_dump(mode="json", exclude={"origins"})
    body["depends_on"] = list(depends_on)
    body["id"] = old_id_of(body)
    run = RunDir(runs / spec.experiment / body["id"])
    run.path.mkdir(parents=True)
    run.spec_path.write_text(json.dumps(body))
    if finished:
        finish(run, top1)
    return run


# ---------------------------------------------------------------- one folder per run, indexes


def test_one_folder_per_run_id_and_one_index_per_experiment(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    other = make_spec(catalog, "t_ft", "tiny_vit", "imagenet")
    assert RunDir.of(runs, spec.id).path == runs / spec.id
    assert index_path(runs, "clsmini") == runs / "experiments" / "clsmini.json"
    prepare_all([spec], runs)
    report, dirs, pending = prepare_all([as_planned_by(spec, "second"), as_planned_by(other, "second")], runs)
    assert dirs[spec.id].path == runs / spec.id and {s.id for s in pending} == {spec.id, other.id}
    assert json.loads((runs / spec.id / "spec.json").read_text())["experiment"] == "clsmini"  # who planned it first
    assert read_index(runs, "clsmini")["runs"] == [spec.id]
    assert read_index(runs, "second") == {"experiment": "second", "runs": sorted([spec.id, other.id])}
    # filtered invocations add up (union), and an index is never shrunk
    add_to_index(runs, "clsmini", [other.id])
    add_to_index(runs, "clsmini", [spec.id])
    assert read_index(runs, "clsmini")["runs"] == sorted([spec.id, other.id])


def _add_ids(runs: str, ids: list[str]) -> None:
    for i in ids:
        add_to_index(Path(runs), "clsmini", [i])


def test_concurrent_invocations_add_up_in_the_index(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ids = [[f"{k}{n:015x}" for n in range(15)] for k in range(4)]
    procs = [ctx.Process(target=_add_ids, args=(str(tmp_path), chunk)) for chunk in ids]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert read_index(tmp_path, "clsmini")["runs"] == sorted(i for chunk in ids for i in chunk)


def test_a_shared_run_is_a_result_of_every_experiment_that_needs_it(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    only_second = make_spec(catalog, "t_ft", "tiny_vit", "imagenet", experiment="second")
    prepare_all([spec], runs)
    report, _, pending = prepare_all([as_planned_by(spec, "second"), only_second], runs)
    finish(RunDir.of(runs, spec.id))
    finish(RunDir.of(runs, only_second.id), 0.25)
    report, _, pending = prepare_all([as_planned_by(spec, "second"), only_second], runs)
    assert [o.state for o in report.outcomes] == ["skipped", "skipped"] and not pending
    first = finished_results(runs, "clsmini")
    assert [(r["experiment"], r["run_id"]) for r in first] == [("clsmini", spec.id)]
    second = finished_results(runs, "second")
    assert sorted((r["experiment"], r["run_id"]) for r in second) == sorted(
        [("second", spec.id), ("second", only_second.id)])
    every = finished_results(runs)
    assert sorted((r["experiment"], r["run_id"]) for r in every) == sorted(
        [("clsmini", spec.id), ("second", spec.id), ("second", only_second.id)])
    assert [r.path.name for r in iter_runs(runs, "clsmini")] == [spec.id]
    assert sorted(r.path.name for r in iter_runs(runs)) == sorted([spec.id, only_second.id])  # each run once


def test_a_run_folder_no_index_lists_is_still_found(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    finish(prepare(spec, runs))  # prepare() alone writes no index
    assert [(e, r.path.name) for e, r in experiment_runs(runs)] == [("clsmini", spec.id)]
    assert [r["experiment"] for r in finished_results(runs, "clsmini")] == ["clsmini"]


def test_a_broken_index_is_one_clear_error(tmp_path):
    path = index_path(tmp_path, "clsmini")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"experiment": "clsmini", "runs": ["../escape"]}))
    with pytest.raises(BadInput, match="not an experiment index"):
        read_index(tmp_path, "clsmini")
    with pytest.raises(BadInput, match="cannot name its index file"):
        index_path(tmp_path, "a/b")


def test_set_aside_keeps_the_old_attempt_under_previous(catalog, tmp_path):
    run = prepare(make_spec(catalog, "t_ft", "tiny_convnext", "imagenet"), tmp_path)
    finish(run)
    dest = run.set_aside()
    assert dest.parent == run.previous and not run.is_finished() and run.spec_path.is_file()
    assert json.loads((dest / "metrics.json").read_text())["metrics"] == {"top1": 0.5}
    assert (dest / "checkpoints" / "final.pt").is_file() and (dest / "log.txt").is_file()
    assert not run.checkpoints.exists() and not run.log_path.exists() and not run.status_path.exists()
    finish(run, 0.7)
    assert run.set_aside(dest.name) == dest.with_name(dest.name + "-2")  # never over an earlier one
    assert run.set_aside() is None  # nothing left to move


# ---------------------------------------------------------------- the old layout


def test_old_layout_runs_are_read_with_their_folders_experiment(catalog, tmp_path, ):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    old = write_old_layout(runs, spec)
    assert [(e, r.path) for e, r in old_layout_runs(runs)] == [("clsmini", old.path)]
    (row,) = finished_results(runs, "clsmini")
    assert row["experiment"] == "clsmini" and row["run_id"] == old.path.name and row["metrics"] == {"top1": 0.5}
    assert old_layout_note(runs) == (f"1 run in the old layout under {runs}/clsmini/; "
                                     f"`bobkit runs migrate --runs-dir {runs}` moves them into the shared layout")
    proc = run_cli("status", "--runs-dir", str(runs))
    assert proc.returncode == 0 and "1 run in the old layout" in proc.stdout and "clsmini" in proc.stdout


def test_migrate_moves_old_runs_with_new_ids_upstream_first(catalog, tmp_path):
    runs = tmp_path / "runs"
    up = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    down_planned = make_spec(catalog, "t_lp", "tiny_convnext", "imagenet")
    old_up = write_old_layout(runs, up)
    old_down = write_old_layout(runs, down_planned, depends_on=[old_up.path.name], finished=False)
    (old_down.checkpoints).mkdir()
    (old_down.checkpoints / "last.pt").write_bytes(b"half")

    preview = migrate_runs(runs, dry_run=True)
    assert [m.action for m in preview] == ["moved", "moved"] and old_up.path.is_dir() and old_down.path.is_dir()

    moves = migrate_runs(runs)
    assert [(m.old_id, m.action) for m in moves] == [(old_up.path.name, "moved"), (old_down.path.name, "moved")]
    new_up = RunDir.of(runs, up.id)  # the id the current plan gives: the experiment is no longer hashed
    assert moves[0].new_id == up.id and new_up.is_finished() and (new_up.checkpoints / "final.pt").is_file()
    down = load_spec(RunDir.of(runs, moves[1].new_id).spec_path)  # spec.json loads: its id is its content's
    assert down.depends_on == [up.id] and down.id == run_id(down.content())
    assert (RunDir.of(runs, down.id).checkpoints / "last.pt").read_bytes() == b"half"
    index = read_index(runs, "clsmini")
    assert index["runs"] == sorted([up.id, down.id])
    assert index["migrated"] == {old_up.path.name: up.id, old_down.path.name: down.id}
    assert not (runs / "clsmini").exists() and old_layout_runs(runs) == []
    assert [(r["experiment"], r["run_id"]) for r in finished_results(runs, "clsmini")] == [("clsmini", up.id)]
    assert migrate_runs(runs) == []  # nothing left to do


def test_migrate_keeps_the_finished_run_and_sets_the_other_aside(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    # the same run, finished in the shared layout already and in two old experiment folders
    finish(prepare(spec, runs), 0.9)
    old_a = write_old_layout(runs, spec, top1=0.1)
    old_b = write_old_layout(runs, as_planned_by(spec, "other"), top1=0.2)
    moves = migrate_runs(runs)
    assert {m.experiment: m.action for m in moves} == {"clsmini": "set aside", "other": "set aside"}
    run = RunDir.of(runs, spec.id)
    assert json.loads(run.metrics_path.read_text())["metrics"] == {"top1": 0.9}
    assert json.loads((run.previous / old_a.path.name / "metrics.json").read_text())["metrics"] == {"top1": 0.1}
    assert json.loads((run.previous / old_b.path.name / "metrics.json").read_text())["metrics"] == {"top1": 0.2}
    assert read_index(runs, "other")["runs"] == [spec.id] and read_index(runs, "clsmini")["runs"] == [spec.id]
    assert sorted(r["experiment"] for r in finished_results(runs)) == ["clsmini", "other"]


def test_migrate_puts_a_finished_old_run_in_place_of_an_unfinished_one(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    attempt = prepare(spec, runs)
    attempt.log_path.write_text("half an attempt\n")
    old = write_old_layout(runs, spec, top1=0.3)
    (move,) = migrate_runs(runs)
    assert move.action == "replaced"
    run = RunDir.of(runs, spec.id)
    assert json.loads(run.metrics_path.read_text())["metrics"] == {"top1": 0.3}
    (kept,) = list(run.previous.iterdir())
    assert (kept / "log.txt").read_text() == "half an attempt\n" and old.path.name not in kept.name
    assert load_spec(run.spec_path).id == spec.id


def test_migrate_leaves_what_it_cannot_rewrite_and_says_why(tmp_path):
    runs = tmp_path / "runs"
    folder = runs / "retrieval" / "some-run"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"id": "some-run", "backbone": "b"}))
    (move,) = migrate_runs(runs)
    assert move.action == "left" and "not a RunSpec" in move.message and folder.is_dir()
    proc = run_cli("runs", "migrate", "--runs-dir", str(runs))
    assert proc.returncode == 0 and "left" in proc.stdout and "not a RunSpec" in proc.stdout
    proc = run_cli("runs", "migrate", "--runs-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "runs folder not found" in proc.stderr and "Traceback" not in proc.stderr


def test_runs_migrate_command(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    old = write_old_layout(runs, spec)
    dry = run_cli("runs", "migrate", "--runs-dir", str(runs), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (move,) = json.loads(dry.stdout)["moves"]
    assert move["action"] == "moved" and move["new_id"] == spec.id and old.path.is_dir()
    done = run_cli("runs", "migrate", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert "moved" in done.stdout and RunDir.of(runs, spec.id).is_finished() and not old.path.exists()
    status = run_cli("status", "--runs-dir", str(runs), "--json")
    data = json.loads(status.stdout)
    assert data["experiments"] == {"clsmini": {"done": 1}} and data["old_layout"] is None

"""run-one, reproduce, status: run experiments and see where they stand. torch is imported only by run-one."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from bobkit.cli_app import (ClassifierOpt, JsonOpt, ManifestsOpt, RecipeOpt, SetOpt, app, console, emit_json,
                            err_console, load, table)
from bobkit.errors import BadInput, ExitCode
from bobkit.migrate import old_layout_note

SMOKE_BANNER = ("SMOKE RUN: tiny synthetic data, untrained backbones, a few steps at tiny resolution. "
                "It tests the pipeline end to end; its numbers are NOT comparable with the paper's.")

RunsDirOpt = Annotated[Path | None, typer.Option("--runs-dir", help="Runs folder (default: $BOBKIT_RUNS, else ./runs).",
                                                 show_default=False)]
DataRootOpt = Annotated[Path | None, typer.Option(
    "--data-root", help="Datasets folder (default: $BOBKIT_DATA, else ~/.cache/bobkit/data).", show_default=False)]
StatusRecipeOpt = Annotated[list[str] | None, typer.Option("--recipe", "-r", help="Only runs of these recipes.")]


def runs_dir_or_default(runs_dir: Path | None) -> Path:
    return runs_dir if runs_dir is not None else Path(os.environ.get("BOBKIT_RUNS", "runs"))


def data_root_or_default(data_root: Path | None) -> Path:
    from bobkit.data import default_data_root

    return data_root if data_root is not None else default_data_root()


def parse_gpus(gpus: str | None) -> list[str] | None:
    if gpus is None:
        return None
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or any(not g.isdigit() for g in ids):
        raise BadInput(f"--gpus '{gpus}': expected GPU indices separated by commas, e.g. 0,1")
    return ids


@app.command("run-one")
def run_one_cmd(
    spec: Annotated[str, typer.Argument(
        metavar="SPEC_OR_RUN_ID",
        help="A run's spec.json (runs/<run id>/spec.json), or a run id: its spec.json under --runs-dir, else the "
             "run of that id in any experiment's plan (default flags or --smoke), written there first.")],
    data_root: DataRootOpt = None,
    runs_dir: RunsDirOpt = None,
    manifests: ManifestsOpt = None,
) -> None:
    """Run one planned run here and write its metrics.json (what every executor runs)."""
    from bobkit.runone import Interrupted, run_one

    spec_path = spec_path_of(spec, runs_dir_or_default(runs_dir), manifests)
    try:
        run_one(spec_path, data_root)
    except Interrupted as exc:
        sys.stdout.flush()
        raise typer.Exit(exc.exit_code) from None


def spec_path_of(arg: str, runs: Path, manifests: list[str] | None) -> Path:
    """run-one's argument as a spec.json path: a path as given (a run folder means its spec.json), or a run id
    found under the runs folder or in the experiments' plans."""
    from bobkit.results import RUN_ID, RunDir, find_run

    path = Path(arg)
    if path.is_dir() and (path / "spec.json").is_file():
        return path / "spec.json"
    if not RUN_ID.fullmatch(arg) or path.exists():
        return path
    existing = find_run(runs, arg)
    if existing is not None:
        return existing.spec_path
    run = RunDir.of(runs, arg)
    found = find_planned(load(manifests), arg)
    if found is None:
        raise BadInput(f"run {arg}: no {run.spec_path}, and no experiment plans a run with this id (default flags or "
                       "--smoke); check --runs-dir, or give the spec.json path (`bobkit plan EXPERIMENT --json` "
                       "lists the ids)")
    from bobkit.exec.base import prepare
    from bobkit.results import add_to_index

    spec, how = found
    run = prepare(spec, runs)
    add_to_index(runs, spec.experiment, [spec.id])
    print(f"run {arg}: planned by `bobkit plan {spec.experiment}{how}`; wrote {run.spec_path}", flush=True)
    return run.spec_path


def find_planned(catalog, run_id: str):
    """(RunSpec, flags) of the run with this id in any experiment's plan, default flags or --smoke; else None."""
    from bobkit.errors import BobkitError
    from bobkit.plan import plan

    for exp_id, exp in sorted(catalog.experiments.items()):
        if exp.table.kind == "synopsis":
            continue
        for smoke in (False, True):
            try:
                specs = plan(catalog, exp_id, smoke=smoke)
            except BobkitError:
                continue
            for s in specs:
                if s.id == run_id:
                    return s, " --smoke" if smoke else ""
    return None


@app.command("reproduce")
def reproduce_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment id, e.g. table3 (`bobkit list experiments`).")],
    backbone: Annotated[list[str] | None, typer.Option("--backbone", "-b", help="Only these backbones.")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
    recipe: RecipeOpt = None,
    sets: SetOpt = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Tiny synthetic data, tiny resolution, a few steps (CPU, minutes).")] = False,
    faithful: Annotated[bool, typer.Option("--faithful", help="Restore the authors' behaviour (see `bobkit list deviations`).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run finished runs of the plan again from scratch; their old results are kept under runs/<run id>/previous/<UTC time>/.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the runs and which are finished; run nothing.")] = False,
    runs_dir: RunsDirOpt = None,
    data_root: DataRootOpt = None,
    executor: Annotated[str | None, typer.Option("--executor", "-e", help="Where runs execute: local, docker, slurm (default: $BOBKIT_EXECUTOR, else docker when a daemon answers and the images are built, else local).", show_default=False)] = None,
    image: Annotated[list[str] | None, typer.Option("--image", help="Docker: FAMILY=IMAGE to run a family in another image (e.g. classification=bobkit/classification:0.1.0-ab12).")] = None,
    shm_size: Annotated[str | None, typer.Option("--shm-size", help="Docker: shared memory per container for data loaders (default 8g).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices for the local and docker executors (e.g. 0,1; docker default: every GPU NVML finds).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Local: runs at once without --gpus (CPU smoke runs use one core each; default 1).")] = None,
    slurm_partition: Annotated[str | None, typer.Option("--slurm-partition", help="Slurm: partition (sbatch --partition).")] = None,
    slurm_account: Annotated[str | None, typer.Option("--slurm-account", help="Slurm: account to charge.")] = None,
    slurm_time: Annotated[str | None, typer.Option("--slurm-time", help="Slurm: time limit per run (90, 4:00:00, 1-12:00:00); default from the estimates.")] = None,
    slurm_config: Annotated[Path | None, typer.Option("--slurm-config", help="Slurm: defaults file (default $BOBKIT_SLURM_CONFIG, else ~/.config/bobkit/slurm.toml; docs/slurm.md).")] = None,
    container: Annotated[str | None, typer.Option("--container", help="Slurm: how a task enters its image: apptainer, pyxis, podman, docker, or none (the host).")] = None,
    slurm_wait: Annotated[bool, typer.Option("--slurm-wait", help="Slurm: wait until every submitted run is done or failed.")] = False,
    classifier: ClassifierOpt = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Plan an experiment, run what is not finished yet, and print its table."""
    from bobkit.manifest.resolve import parse_sets
    from bobkit.plan import parse_classifiers, plan

    parsed_sets = parse_sets(sets)
    catalog = load(manifests)
    if experiment not in catalog.experiments:
        from bobkit.errors import unknown_id

        raise unknown_id("experiment", experiment, sorted(catalog.experiments))
    exp = catalog.experiments[experiment]
    out = err_console() if json_out else console()
    if exp.table.kind == "synopsis":
        return _synopsis(catalog, experiment, backbone, smoke, json_out)
    specs = plan(catalog, experiment, backbones=backbone, datasets=dataset, recipes=recipe, smoke=smoke,
                 faithful=faithful, classifiers=parse_classifiers(catalog, classifier), sets=parsed_sets)
    runs = runs_dir_or_default(runs_dir)
    root = data_root_or_default(data_root)
    if smoke:
        out.print(f"[bold yellow]{SMOKE_BANNER}[/]")
    note = old_layout_note(runs)
    if note:
        out.print(f"[yellow]{note}[/]")
    if dry_run:
        return _dry_run(specs, runs, experiment, json_out, force=force)
    from bobkit.exec import create
    from bobkit.exec.local import ExecutionInterrupted

    from bobkit.exec.docker import default_executor, parse_image_overrides

    images = parse_image_overrides(image)
    executor = executor or default_executor(specs, images)
    runner = create(executor, gpus=parse_gpus(gpus), jobs=jobs, images=images or None, shm_size=shm_size, progress=not json_out, console=out,
                    slurm_partition=slurm_partition, slurm_account=slurm_account, slurm_time=slurm_time,
                    slurm_config=slurm_config, container=container, slurm_wait=slurm_wait)
    out.print(f"{experiment}: {len(specs)} run(s) → {runs.resolve()}  (executor {executor}, data {root})")
    if force:
        set_aside_finished(specs, runs, out)
    try:
        report = runner.execute(specs, runs, root)
    except ExecutionInterrupted as exc:
        _print_outcomes(out, exc.report, only_problems=True)
        out.print("[yellow]interrupted[/]: run the same command again to resume")
        if json_out:
            emit_json({"experiment": experiment, "smoke": smoke, "interrupted": True,
                       "runs": _outcomes_json(exc.report)})
        raise typer.Exit(exc.exit_code) from None
    rows = _experiment_rows(runs, experiment)
    table_json = _print_table(catalog, experiment, rows, out, json_out)
    _print_outcomes(out, report, only_problems=True)
    if smoke:
        out.print(f"[bold yellow]{SMOKE_BANNER}[/]")
    if json_out:
        emit_json({"experiment": experiment, "smoke": smoke, "runs_dir": str(runs), "runs": _outcomes_json(report),
                   "table": table_json})
    code = exit_code_for(report)
    if code:
        raise typer.Exit(int(code))


def exit_code_for(report) -> ExitCode:
    states = Counter(o.state for o in report.outcomes)
    if states["failed"] or states["interrupted"]:
        return ExitCode.RUN_FAILED
    if states["missing"]:
        return ExitCode.ENVIRONMENT
    return ExitCode.OK


def set_aside_finished(specs, runs: Path, out) -> list[Path]:
    """--force: each finished run of the plan keeps its old result under runs/<id>/previous/<UTC time>/ and
    starts again from scratch."""
    from bobkit.results import RunDir

    moved = []
    for s in specs:
        run = RunDir.of(runs, s.id)
        if run.is_finished():
            dest = run.set_aside()
            if dest is not None:
                moved.append(dest)
    if moved:
        out.print(f"--force: {len(moved)} finished run(s) start again; their results are kept under "
                  f"<run>/previous/ (e.g. {moved[0]})")
    return moved


def _experiment_rows(runs: Path, experiment: str) -> list[dict[str, Any]]:
    from bobkit.results import finished_results

    return finished_results(runs, experiment) if runs.is_dir() else []


def _print_table(catalog, experiment: str, rows: list[dict[str, Any]], out, json_out: bool) -> dict | None:
    """The experiment's table (bobkit.tables), or a plain listing of the finished runs."""
    try:
        from bobkit import tables
    except ImportError:
        tables = None
    if tables is not None:
        t = tables.experiment_table(catalog, experiment, rows)
        if not json_out:
            out.print(tables.render_rich(t))
        return tables.to_json(t)
    listing = [[r["backbone"], r["dataset"], r["recipe"],
                "  ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items())] for r in rows]
    if not json_out:
        out.print(table(f"{experiment}: {len(rows)} finished run(s)", ("backbone", "dataset", "recipe", "metrics"), listing))
    return {"rows": rows}


def _outcomes_json(report) -> list[dict[str, Any]]:
    return [{"run_id": o.run_id, "state": o.state, "run_dir": str(o.run_dir), "message": o.message}
            for o in report.outcomes]


def _print_outcomes(out, report, only_problems: bool = False) -> None:
    counts = Counter(o.state for o in report.outcomes)
    out.print("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    groups: dict[tuple[str, str], list] = {}
    for o in report.outcomes:
        if only_problems and o.state in ("done", "skipped", "queued"):
            continue
        groups.setdefault((o.state, o.message), []).append(o)
    for (state, message), outs in groups.items():  # one line per distinct problem, not per run
        if len(outs) == 1:
            out.print(f"  [red]{state}[/] {outs[0].run_id}: {message}  [dim]({outs[0].run_dir / 'log.txt'})[/]")
        else:
            ids = ", ".join(o.run_id for o in outs[:4]) + (f", … ({len(outs)} runs)" if len(outs) > 4 else "")
            out.print(f"  [red]{state}[/] {len(outs)} runs ({ids}): {message}")


def _dry_run(specs, runs: Path, experiment: str, json_out: bool, force: bool = False) -> None:
    from bobkit.results import RunDir

    rows = []
    for s in specs:
        state = RunDir.of(runs, s.id).status()
        rows.append({"id": s.id, "backbone": s.backbone, "dataset": s.dataset, "recipe": s.recipe,
                     "lr": s.hparams.get("lr"), "image": s.image_family, "gpus": s.gpus, "state": state,
                     "rerun": state != "done" or force, "depends_on": s.depends_on, "gpu_hours": s.gpu_hours})
    if json_out:
        emit_json({"experiment": experiment, "dry_run": True, "force": force, "runs": rows})
        return
    todo = sum(1 for r in rows if r["rerun"])
    shown = [r["state"] + (" (--force: runs again)" if force and r["state"] == "done" else "") for r in rows]
    console().print(table(f"{experiment}: {len(rows)} run(s), {todo} to run (dry run: nothing started)",
                          ("run id", "backbone", "dataset", "recipe", "lr", "image", "gpus", "state"),
                          [[r["id"], r["backbone"], r["dataset"], r["recipe"], r["lr"], r["image"], r["gpus"], st]
                           for r, st in zip(rows, shown)]))


def _synopsis(catalog, experiment: str, backbones, smoke: bool, json_out: bool) -> None:
    """Synopsis tables (table1) build backbones rather than train them: bobkit.synopsis does it."""
    try:
        from bobkit import synopsis
    except ImportError:
        raise BadInput(f"experiment '{experiment}' is a synopsis table, and bobkit.synopsis is not installed "
                       "in this checkout") from None
    code = synopsis.reproduce_synopsis(catalog, experiment, backbones=backbones, smoke=smoke, json_out=json_out)
    if code:
        raise typer.Exit(int(code))


@app.command("status")
def status_cmd(
    experiment: Annotated[str | None, typer.Argument(help="Only this experiment.")] = None,
    recipe: StatusRecipeOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """How many runs are done, running, stale (killed hard), failed, interrupted or pending, per experiment.

    A run shared by several experiments counts in each."""
    from bobkit.results import experiment_runs

    runs = runs_dir_or_default(runs_dir)
    pairs = experiment_runs(runs, experiment)
    if experiment is not None and not pairs:
        raise BadInput(f"{runs}: no runs of experiment '{experiment}' here; check --runs-dir")
    if recipe:
        pairs = [(e, r) for e, r in pairs if _recipe_of(r) in recipe]
        if not pairs:
            raise BadInput(f"{runs}: no runs of recipe {', '.join(recipe)}"
                           + (f" in experiment '{experiment}'" if experiment else "") + "; check --recipe")
    per_exp: dict[str, Counter] = {}
    problems = []
    for exp, run in pairs:
        state = run.live_status()
        per_exp.setdefault(exp, Counter())[state] += 1
        if state in ("failed", "interrupted", "stale"):
            st = run.status_record()
            error = st.get("error", "") if state != "stale" else (
                f"marked running by process {st.get('pid')}, which is gone (killed?); `bobkit reproduce` runs it again")
            problems.append({"experiment": exp, "run_id": run.path.name, "state": state,
                             "error": error, "log": str(run.log_path)})
    states = ["done", "running", "stale", "failed", "interrupted", "pending"]
    states += sorted({s for c in per_exp.values() for s in c} - set(states))
    from bobkit.exec.slurm import print_queue_summary, queue_summary

    slurm = queue_summary(pairs)  # squeue's view of runs submitted to Slurm
    note = old_layout_note(runs)
    if json_out:
        emit_json({"runs_dir": str(runs), "experiments": {e: dict(c) for e, c in per_exp.items()}, "problems": problems,
                   "slurm": slurm, "old_layout": note})
        return
    if note:
        console().print(f"[yellow]{note}[/]")
    if not per_exp:
        console().print(f"no runs under {runs}")
        return
    rows = [[e, sum(c.values())] + [c.get(s, 0) for s in states] for e, c in sorted(per_exp.items())]
    console().print(table(f"runs under {runs}", ["experiment", "total"] + states, rows))
    print_queue_summary(slurm, console())
    for p in problems:
        console().print(f"  [red]{p['state']}[/] {p['experiment']}/{p['run_id']}: {p['error']}  [dim]({p['log']})[/]")


def _recipe_of(run) -> str | None:
    try:
        spec = run.spec()
    except BadInput:
        return None
    return spec.get("recipe") if isinstance(spec, dict) else None

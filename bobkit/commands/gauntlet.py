"""`bobkit gauntlet`: describe a new backbone (`init`), run it through BoB's tasks, and rank it.

`bobkit gauntlet BACKBONE ...` is short for `bobkit gauntlet run BACKBONE ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from bobkit.cli_app import JsonOpt, ManifestsOpt, SetOpt, app, console, emit_json, err_console, load
from bobkit.commands.run import DataRootOpt, RunsDirOpt, data_root_or_default, parse_gpus, runs_dir_or_default


class _RunByDefault(TyperGroup):
    """`bobkit gauntlet NAME` runs the gauntlet; `init` and `run` are the subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


gauntlet_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                           help="Put your own backbone through BoB's tasks and see where it ranks "
                                "(docs/gauntlet.md). `bobkit gauntlet BACKBONE` = `bobkit gauntlet run BACKBONE`.")
app.add_typer(gauntlet_app, name="gauntlet")


@gauntlet_app.command("init")
def init_cmd(
    name: Annotated[str, typer.Argument(help="Id for the new backbone (lower case, digits, _ . -).")],
    entry: Annotated[str | None, typer.Option("--entry", help="package.module:function that returns your torch module.")] = None,
    timm_arch: Annotated[str | None, typer.Option("--timm", help="A timm architecture (resnet*, convnext*, swinv2*, vit_*).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="With --timm: your state_dict file for it.")] = None,
    hub_id: Annotated[str | None, typer.Option("--hub-id", help="With --timm: a Hugging Face repo holding model.safetensors.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Manifest file to write (default NAME.yaml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a one-entry backbones manifest for your backbone (measured where possible; EDIT the rest)."""
    from bobkit.gauntlet_init import draft_entry, measure, write_manifest

    raw = draft_entry(name, entry=entry, timm_arch=timm_arch, checkpoint=str(checkpoint) if checkpoint else None,
                      hub_id=hub_id)
    filled = measure(raw)
    path = write_manifest(filled, out or Path(f"{name}.yaml"), force=force)
    if json_out:
        emit_json({"path": str(path), "backbone": filled})
        return
    c = console()
    c.print(f"wrote {path}: backbone '{name}' ({filled['params_m']} M parameters; tasks {', '.join(filled['tasks'])})")
    c.print("edit the fields marked EDIT, then:")
    c.print(f"  bobkit gauntlet {name} --manifests {path} --budget smoke")


@gauntlet_app.command("run")
def run_cmd(
    backbone: Annotated[str, typer.Argument(help="Backbone id (yours, from --manifests, or a paper backbone).")],
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated task families (default: the manifest's `tasks`): classification, detection, ood_classification, ood_detection, retrieval.")] = None,
    budget: Annotated[str, typer.Option("--budget", help="smoke (synthetic, CPU minutes), quick (linear probe + retrieval), full (every table2 run).")] = "quick",
    peers: Annotated[str | None, typer.Option("--peers", help="Smoke: comma-separated reference backbones run alongside (default: table3's smoke backbones).")] = None,
    executor: Annotated[str, typer.Option("--executor", "-e", help="local, docker or slurm (your module must be importable where runs execute).")] = "local",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Local: runs at once without --gpus.")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices for the local and docker executors, e.g. 0,1.")] = None,
    runs_dir: RunsDirOpt = None,
    data_root: DataRootOpt = None,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where report.md/.html go (default RUNS/gauntlet-ID/report).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the runs and what the budget leaves out; run nothing.")] = False,
    faithful: Annotated[bool, typer.Option("--faithful", help="Restore the authors' behaviour (see `bobkit list deviations`).")] = False,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Plan the paper's runs for BACKBONE, run them, and rank it among the published backbones."""
    from bobkit.manifest.resolve import parse_sets

    from bobkit import gauntlet as gt
    from bobkit.backbones.custom import importable_from_cwd

    catalog = load(manifests)
    importable_from_cwd()
    peer_list = [p.strip() for p in peers.split(",") if p.strip()] if peers is not None else None
    g = gt.build_gauntlet(catalog, backbone, tasks=gt.parse_tasks(tasks), budget=budget, peers=peer_list)
    out = err_console() if json_out else console()
    if g.smoke:
        out.print(f"[bold yellow]{gt.SMOKE_WARNING}[/]")
    entry = g.catalog.backbones[g.backbone]
    if entry.family == "custom" or entry.weights.format in ("checkpoint", "python"):
        _check_plugin(entry, g)
    specs = gt.plan_runs(g, faithful=faithful, sets=parse_sets(sets))
    runs = runs_dir_or_default(runs_dir)
    for line in g.left_out:
        out.print(f"[dim]left out by --budget {budget}:[/] {line}")
    if dry_run:
        from bobkit.commands.run import _dry_run

        return _dry_run(specs, runs, g.id, json_out)
    from bobkit.commands.run import _print_outcomes, exit_code_for
    from bobkit.exec import create

    root = data_root_or_default(data_root)
    runner = create(executor, gpus=parse_gpus(gpus), jobs=jobs, progress=not json_out, console=out)
    out.print(f"{g.id}: {len(specs)} run(s) of {g.backbone}" + (f" and peers {', '.join(g.peers)}" if g.peers else "")
              + f" → {runs.resolve()}  (executor {executor})")
    report = runner.execute(specs, runs, root)
    _print_outcomes(out, report, only_problems=True)
    from bobkit.results import finished_results
    from bobkit.tables import render_rich, to_json

    rows, table, st = gt.rank(g, finished_results(runs) if runs.is_dir() else [])
    from bobkit.gauntlet_report import standing_lines, write_page

    notes = [f"tasks: {', '.join(g.tasks)}; budget {budget}"] + [f"left out: {x}" for x in g.left_out]
    pages = write_page(g, rows, table, st, notes, runs, report_dir or runs / g.id / "report")
    if not json_out:
        out.print(render_rich(table))
        out.print(f"[bold]{g.backbone}[/]: " + "; ".join(standing_lines(g, st)))
        out.print(f"report: {pages['md']}  {pages['html']}")
        if g.smoke:
            out.print(f"[bold yellow]{gt.SMOKE_WARNING}[/]")
    else:
        emit_json({"experiment": g.id, "backbone": g.backbone, "budget": budget, "smoke": g.smoke, "tasks": g.tasks,
                   "peers": g.peers, "left_out": g.left_out, "standing": st.to_json(), "report": pages,
                   "runs": [{"run_id": o.run_id, "state": o.state, "run_dir": str(o.run_dir), "message": o.message}
                            for o in report.outcomes],
                   "table": to_json(table)})
    code = exit_code_for(report)
    if code:
        raise typer.Exit(int(code))


def _check_plugin(entry, g) -> None:
    """Try the backbone once at the runs' resolution: a wrong shape is a clear error now, not a failed run later."""
    from bobkit.backbones.custom import probe_backbone
    from bobkit.plan import SMOKE_HPARAMS

    res = SMOKE_HPARAMS["classification"]["resolution"] if g.smoke else entry.resolution
    det = SMOKE_HPARAMS["detection"]["resolution"] if g.smoke else None
    if entry.weights.format == "checkpoint" and not g.smoke and entry.weights.path is None:
        pretrained = False  # hub checkpoints are fetched by the runs themselves
    else:
        pretrained = not g.smoke
    probe_backbone(entry, resolution=res, detection_resolution=det, tasks=g.tasks, pretrained=pretrained)

"""`bobkit runs migrate`: the runs folder's layout (see bobkit/results.py and bobkit/migrate.py)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer

from bobkit.cli_app import JsonOpt, app, console, emit_json
from bobkit.commands.run import RunsDirOpt, runs_dir_or_default
from bobkit.errors import BadInput

runs_app = typer.Typer(help="The runs folder: one folder per run id (runs/<run id>/), indexes in runs/experiments/.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("migrate")
def migrate_cmd(
    runs_dir: RunsDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would move; move nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Move runs of the old layout (runs/<experiment>/<run id>/) to runs/<run id>/ with their ids recomputed
    from spec.json; a result already there is kept, the other folder goes to runs/<run id>/previous/."""
    from bobkit.migrate import migrate_runs

    runs = runs_dir_or_default(runs_dir)
    if not runs.is_dir():
        raise BadInput(f"{runs}: runs folder not found; give the folder `bobkit reproduce` wrote into (--runs-dir)")
    moves = migrate_runs(runs, dry_run=dry_run)
    if json_out:
        emit_json({"runs_dir": str(runs), "dry_run": dry_run, "moves": [m.to_json() for m in moves]})
        return
    out = console()
    if not moves:
        out.print(f"no runs in the old layout under {runs}: nothing to migrate")
        return
    verb = {"moved": "would move", "set aside": "would set aside", "replaced": "would replace",
            "left": "would leave"} if dry_run else {}
    for m in moves:
        where = f" → {m.dest}" if m.dest else ""
        why = f": {m.message}" if m.message else ""
        style = "yellow" if m.action == "left" else "green"
        out.print(f"[{style}]{verb.get(m.action, m.action):>15}[/] {m.experiment}/{m.old_id}{where}{why}",
                  highlight=False)
    counts = Counter(m.action for m in moves)
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    out.print(f"{'dry run: ' if dry_run else ''}{len(moves)} old-layout run(s) under {runs}: {summary}")
    if counts["left"]:
        out.print("[yellow]left in place[/] runs are still read where they are (status, verify); "
                  "fix what their line says and migrate again")

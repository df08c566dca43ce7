"""The Typer app and the output helpers every command shares.

Command modules under bobkit/commands/ register on `app`; they import heavy libraries (torch,
docker, matplotlib) inside the command body only, so `bobkit --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Iterable

import typer

from bobkit.errors import BobkitError

app = typer.Typer(
    name="bobkit",
    help="Rerun, check and extend the Battle of the Backbones study (arXiv 2310.19909).\n\n"
         "Exit codes: 0 ok · 1 verification failed · 2 bad input · 3 environment missing · 4 a run failed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _version(value: bool) -> None:
    if value:
        from bobkit import __version__

        typer.echo(f"bobkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Rerun, check and extend the Battle of the Backbones study (arXiv 2310.19909)."""


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ManifestsOpt = Annotated[
    list[str] | None,
    typer.Option("--manifests", "-m", help="Extra manifest folder(s), read after the built-in ones."),
]
RecipeOpt = Annotated[list[str] | None, typer.Option("--recipe", "-r", help="Only the grid entries of these recipes.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override one hyperparameter of the planned runs (repeatable; typed and "
                                       "validated like a manifest value; recorded as its origin; the runs get their "
                                       "own ids, and verify never compares them with the paper).")]
ClassifierOpt = Annotated[list[str] | None, typer.Option(
    "--classifier", metavar="BACKBONE=FILE", help="Evaluate this ImageNet classifier file (timm state dict or a bobkit "
                         "final.pt) in the OOD classification runs instead of fine-tuning one first.")]


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]):
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def load(manifests: list[str] | None = None):
    from bobkit.manifest.loader import load_catalog

    return load_catalog(manifests or ())


def main() -> None:
    """Console-script entry: a BobkitError becomes one line on stderr and its exit code."""
    import bobkit.commands  # noqa: F401  (registers every command)

    try:
        app()  # standalone: click reports usage errors itself, with exit code 2
    except BobkitError as exc:
        err_console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(int(exc.exit_code))

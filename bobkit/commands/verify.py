"""verify, report, results import/export: published vs reproduced. No torch; matplotlib only in report."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from bobkit.cli_app import JsonOpt, ManifestsOpt, app, console, emit_json, load
from bobkit.errors import BadInput, ExitCode

results_app = typer.Typer(help="Move results in and out of bobkit (CSV, Parquet, JSON).", no_args_is_help=True)
app.add_typer(results_app, name="results")


class FailOn(str, Enum):
    fail = "fail"
    warn = "warn"
    missing = "missing"


class Unit(str, Enum):
    auto = "auto"
    fraction = "fraction"
    percent = "percent"


class Format(str, Enum):
    md = "md"
    html = "html"
    latex = "latex"


def default_runs_dir() -> Path:
    return Path(os.environ.get("BOBKIT_RUNS", "runs"))


RunsArg = Annotated[Path | None, typer.Argument(help="Runs folder (default: $BOBKIT_RUNS, else ./runs).",
                                                show_default=False)]
ResultsOpt = Annotated[list[Path] | None, typer.Option(
    "--results", help="Results file(s) from anywhere: .csv, .parquet or .json, long or wide (see --map).")]
MapOpt = Annotated[list[str] | None, typer.Option(
    "--map", help="Rename a column: SRC=DST (DST: backbone, dataset, metric, value, lr, seed, … or a dataset id).")]
MetricOpt = Annotated[str | None, typer.Option("--metric", help="Metric of a table with one column per dataset.")]
UnitOpt = Annotated[Unit, typer.Option("--unit", help="Values in the results file: fractions or percentages.")]


def gather_rows(catalog, runs_dir: Path | None, results: list[Path] | None, mapping: list[str] | None,
                experiment: str | None, metric: str | None, unit: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Finished runs under runs_dir (when given or when there are no --results) plus imported files."""
    from bobkit.results import finished_results
    from bobkit.resultsio import parse_map, read_results

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if runs_dir is not None and not runs_dir.is_dir():
        raise BadInput(f"{runs_dir}: runs folder not found; give the folder `bobkit reproduce` wrote into")
    if runs_dir is None and not results:
        runs_dir = default_runs_dir()
        if not runs_dir.is_dir():
            notes.append(f"no runs folder at {runs_dir}: every published cell is 'missing'")
            runs_dir = None
    if runs_dir is not None:
        found = finished_results(runs_dir)
        rows += found
        notes.append(f"{len(found)} finished run(s) under {runs_dir}")
    for path in results or []:
        recs, how = read_results(catalog, path, mapping=parse_map(mapping or []), experiment=experiment,
                                 metric=metric, unit=unit)
        rows += recs
        notes += how
    return rows, notes


STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "missing": "dim", "smoke": "magenta",
                "custom": "blue", "info": "cyan"}


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


# Cells listed one per line by default; pass and missing cells are counted per experiment instead,
# so a full verify stays readable (and fast: rendering ~300 rows in rich takes about a second).
LISTED_BY_DEFAULT = ("fail", "warn", "info")


def _summary_lines(verdicts) -> list[str]:
    """'retrieval: 258 pass, 4 missing' per experiment, for the cells not listed one per line."""
    per: dict[str, dict[str, int]] = {}
    for v in verdicts:
        counts = per.setdefault(v.experiment, {})
        counts[v.status] = counts.get(v.status, 0) + 1
    return [f"{exp}: " + ", ".join(f"[{STATUS_STYLE[s]}]{n} {s}[/]" for s, n in counts.items())
            for exp, counts in per.items()]


def _cell_line(v, src: str) -> str:
    """One verdict as one line: status, cell, tier, numbers, tolerance, source footnote."""
    from rich.markup import escape

    from bobkit.verify import describe

    status = f"[{STATUS_STYLE.get(v.status, '')}]{v.status:<7}[/]"
    cell = escape(f"{v.experiment}/{v.backbone}/{v.dataset}/{v.metric}")
    if v.tier == "rank":
        tol = f"ρ≥{v.tolerance:g} ({v.tolerance_id})" if v.tolerance is not None else (v.tolerance_id or "–")
        pub = ", ".join(v.stats.get("published_top") or []) or "–"
        rep = ", ".join(v.stats.get("reproduced_top") or []) or "–"
        numbers, detail = f"published top {pub}; reproduced top {rep}; {tol}", v.detail
    elif v.tier == "published":
        numbers, detail = f"{v.published:g} {v.unit}", v.detail or "ok"
    elif v.tier == "info":
        numbers, detail = f"published {_fmt(v.published)}", v.detail
    else:
        tol = f"±{v.tolerance:.2f} ({v.tolerance_id})" if v.tolerance is not None else "–"
        numbers = (f"published {_fmt(v.published)}  reproduced {_fmt(v.reproduced)}  "
                   f"Δ {_fmt(v.delta, True)} pp  tolerance {tol}")
        detail = v.detail or describe(v)
    line = f"{status} {cell} [dim]\\[{v.tier}][/] {escape(numbers)} [dim]{v.confidence} \\[{src}][/]"
    return line + (f"\n        [dim]{escape(detail)}[/]" if detail else "")


def _render(report, title: str, show_all: bool) -> None:
    """One line per listed verdict (fits any terminal width); sources as numbered footnotes.

    Pass and missing cells are counted per experiment unless --all: a full verify lists ~300 cells.
    """
    from rich.markup import escape

    from bobkit.verify import tolerance_text

    c = console()
    sources: dict[str, int] = {}
    listed, hidden = [], []
    for v in report.verdicts:
        (listed if show_all or v.status in LISTED_BY_DEFAULT or v.tier == "rank" else hidden).append(v)
    c.print(f"[bold]{escape(title)}[/]")
    for v in listed:
        src = str(sources.setdefault(v.source, len(sources) + 1)) if v.source else "–"
        c.print(_cell_line(v, src))
    if hidden:
        c.print(f"[bold]not listed[/] ({len(hidden)} cells; --all lists every one):")
        for line in _summary_lines(hidden):
            c.print(f"  {line}")
    if sources:
        c.print("[bold]sources[/]")
    for source, n in sources.items():
        c.print(f"[dim]\\[{n}] {escape(source)}[/]")
    if report.tolerances:
        c.print("[bold]tolerances[/] (from the manifests' tolerances.yaml):")
        for tol in report.tolerances:
            c.print(f"  {tol.id} \\[{tol.tier}]: {escape(tolerance_text(tol))}. Why: {escape(tol.source)} ({tol.confidence})")
    for note in report.notes:
        c.print(f"[dim]{escape(note)}[/]")
    counts = report.counts()
    c.print("  ".join(f"[{STATUS_STYLE[s]}]{n} {s}[/]" for s, n in counts.items() if n))


@app.command("verify")
def verify_cmd(
    runs_dir: RunsArg = None,
    experiment: Annotated[list[str] | None, typer.Option("--experiment", "-e", help="Only these experiments.")] = None,
    results: ResultsOpt = None,
    mapping: MapOpt = None,
    metric: MetricOpt = None,
    unit: UnitOpt = Unit.auto,
    json_out: JsonOpt = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML (one testcase per cell).")] = None,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Exit 1 at this level: fail, warn (warn or fail), "
                                                              "missing (any of them).")] = FailOn.fail,
    published_only: Annotated[bool, typer.Option("--published-only",
                                                 help="Check the published tables themselves, no results.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every cell, pass and missing ones too "
                                                         "(by default those are counted per experiment).")] = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Compare results with the published numbers: pass / warn / fail / missing per cell, with tolerances.

    Exit 0 when the --fail-on level holds, 1 when it does not, 2 on bad input.
    """
    from bobkit.verify import check_published, to_junit, verify

    catalog = load(manifests)
    if published_only:
        if runs_dir is not None or results:
            raise BadInput("--published-only checks the manifests alone; drop RUNS_DIR and --results")
        report = check_published(catalog)
        if experiment:
            report.verdicts = [v for v in report.verdicts if v.experiment in experiment]
        title = f"published tables: {len(report.verdicts)} values"
    else:
        one = experiment[0] if experiment and len(experiment) == 1 else None
        rows, notes = gather_rows(catalog, runs_dir, results, mapping, one, metric, unit.value)
        report = verify(catalog, rows, experiments=experiment)
        report.notes = notes + report.notes
        title = f"bobkit verify: {len(report.verdicts)} published cells"
    if junit is not None:
        from bobkit.results import atomic_write_text

        atomic_write_text(junit, to_junit(report, fail_on.value))
    if json_out:
        emit_json({**report.to_json(), "fail_on": fail_on.value, "holds": report.holds(fail_on.value)})
    else:
        _render(report, title, show_all)
    if not report.holds(fail_on.value):
        raise typer.Exit(int(ExitCode.VERIFY_FAILED))


@app.command("report")
def report_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment id, e.g. retrieval.")],
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Runs folder (default: $BOBKIT_RUNS, "
                                                                     "else ./runs when present).")] = None,
    results: ResultsOpt = None,
    mapping: MapOpt = None,
    metric: MetricOpt = None,
    unit: UnitOpt = Unit.auto,
    fmt: Annotated[Format, typer.Option("--format", help="md, html (one self-contained file) or latex.")] = Format.md,
    out: Annotated[Path, typer.Option("--out", help="Folder for the report and its figures.")] = Path("reports"),
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Tables only (no matplotlib).")] = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Published and reproduced side by side, deltas coloured by verdict, and the paper-style figures."""
    from bobkit.report import build_report, write_report

    catalog = load(manifests)
    if experiment not in catalog.experiments:
        from bobkit.errors import unknown_id

        raise unknown_id("experiment", experiment, sorted(catalog.experiments))
    rows, notes = gather_rows(catalog, runs_dir, results, mapping, experiment, metric, unit.value)
    data = build_report(catalog, experiment, rows, notes=notes)
    path = write_report(data, fmt.value, out, figures=not no_figures)
    console().print(f"wrote {path}")


@results_app.command("export")
def export_cmd(
    runs_dir: RunsArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .csv, .parquet or .json.")] = ...,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Only this experiment.")] = None,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Leave smoke (synthetic-data) runs out.")] = False,
) -> None:
    """Every finished run as one line per metric (long form)."""
    from bobkit.results import finished_results
    from bobkit.resultsio import file_format, write_results

    file_format(out)
    runs_dir = runs_dir or default_runs_dir()
    if not runs_dir.is_dir():
        raise BadInput(f"{runs_dir}: runs folder not found")
    records = finished_results(runs_dir, experiment)
    if no_smoke:
        records = [r for r in records if not r.get("smoke")]
    n = write_results(records, out)
    console().print(f"wrote {n} values from {len(records)} runs to {out}")


@results_app.command("import")
def import_cmd(
    source: Annotated[Path, typer.Argument(help="Results from anywhere: .csv, .parquet or .json, long or wide.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bobkit long-form file: .csv, .parquet or .json.")] = ...,
    mapping: MapOpt = None,
    metric: MetricOpt = None,
    unit: UnitOpt = Unit.auto,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e",
                                                   help="Experiment the rows belong to (when the file has none).")] = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Check a foreign results file against the manifests and write it in bobkit's long form."""
    from bobkit.resultsio import file_format, parse_map, read_results, write_results

    file_format(out)
    catalog = load(manifests)
    records, notes = read_results(catalog, source, mapping=parse_map(mapping or []), experiment=experiment,
                                  metric=metric, unit=unit.value)
    for r in records:
        r.pop("source_row", None)
    n = write_results(records, out)
    if json_out:
        emit_json({"out": str(out), "values": n, "records": len(records), "notes": notes})
        return
    for note in notes:
        console().print(f"[dim]{note}[/]")
    console().print(f"wrote {n} values to {out}")


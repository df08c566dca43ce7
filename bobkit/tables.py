"""An experiment's table from finished runs: one cell per backbone × table setting.

A setting (a column of a paper table) names recipes, datasets and a metric. Its cell for one
backbone combines runs in two steps:
  1. per part — one (recipe, dataset) — the runs over learning rates and seeds combine by the
     setting's `select`: `best_lr` (mean over seeds at each lr, then the best lr) or `mean` (all runs);
  2. the cell value is the mean of its parts.
Ranking tables (table.kind == "ranking") also carry the z-score ranking of bobkit.ranking.

`select_cell` is THE cell selector: tables, reports, `reproduce`'s table, the gauntlet and verify
all take a cell's runs through it, so a cell has one value everywhere. Within a part, a run is
counted once (by run id) even when several experiments list it; the asking experiment's own runs
are used when it has some. Smoke runs (synthetic data) are used only where no real run exists, and
`--set` runs (a user's configuration) only where no run of the paper's configuration exists; either
way the cell says so.
Pure: no torch, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from bobkit.errors import unknown_id
from bobkit.manifest.models import Setting
from bobkit.ranking import RANKING_RULE, Ranking, rank_backbones

SMOKE_NOTE = "SMOKE results (synthetic data, untrained backbones): these numbers test the pipeline, not the paper"
CUSTOM_NOTE = ("some cells come from runs with --set values (a configuration of your own, not the paper's): "
               "they are shown, never compared with published numbers")


@dataclass(frozen=True)
class Selection:
    """Runs of one part combined into one number."""

    value: float
    lr: float | None
    n_runs: int
    run_ids: tuple[str, ...]
    smoke: bool
    custom: bool = False  # from runs with --set values: not the paper's configuration


@dataclass(frozen=True)
class Cell:
    backbone: str
    setting: str
    value: float | None
    parts: dict[str, Selection]
    expected_parts: int
    smoke: bool
    custom: bool = False


    @property
    def complete(self) -> bool:
        return len(self.parts) == self.expected_parts

    @property
    def n_runs(self) -> int:
        return sum(p.n_runs for p in self.parts.values())


@dataclass
class ExperimentTable:
    experiment: str
    title: str
    kind: str
    settings: list[Setting]
    backbones: list[str]
    cells: dict[tuple[str, str], Cell]
    ranking: Ranking | None = None
    top_k: int = 3
    params_below_m: float | None = None
    smoke: bool = False
    notes: list[str] = field(default_factory=list)

    def cell(self, backbone: str, setting: str) -> Cell | None:
        return self.cells.get((backbone, setting))

    def setting(self, setting_id: str) -> Setting:
        for s in self.settings:
            if s.id == setting_id:
                return s
        raise unknown_id("setting", setting_id, [s.id for s in self.settings])


def part_key(recipe: str, dataset: str) -> str:
    return f"{recipe}/{dataset}"


def canonical_backbone(catalog, name: str) -> str:
    """A backbone id for an id or one of its aliases; unknown names pass through unchanged."""
    if name in catalog.backbones:
        return name
    found = catalog.backbone_by_alias(name)
    return found.id if found is not None else name


def metric_of(row: dict[str, Any], metric: str) -> float | None:
    v = (row.get("metrics") or {}).get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def select_runs(rows: list[dict[str, Any]], metric: str, select: str, higher_is_better: bool = True) -> Selection | None:
    """Combine one part's runs: each run once; real runs win over smoke runs and the paper's configuration
    over --set runs; then best_lr or mean."""
    rows = list({str(r.get("run_id")) if r.get("run_id") else id(r): r for r in rows}.values())
    real = [r for r in rows if not r.get("smoke")]
    use = real or rows
    paper = [r for r in use if not r.get("user_set")]
    use = paper or use
    scored = [(r, metric_of(r, metric)) for r in use]
    scored = [(r, v) for r, v in scored if v is not None]
    if not scored:
        return None
    smoke, custom = not real, not paper
    if select == "mean":
        vals = [v for _, v in scored]
        lrs = {r.get("lr") for r, _ in scored}
        return Selection(sum(vals) / len(vals), lrs.pop() if len(lrs) == 1 else None, len(vals),
                         tuple(str(r.get("run_id", "")) for r, _ in scored), smoke, custom)
    by_lr: dict[Any, list[tuple[dict, float]]] = {}
    for r, v in scored:
        by_lr.setdefault(r.get("lr"), []).append((r, v))
    means = {lr: sum(v for _, v in group) / len(group) for lr, group in by_lr.items()}
    pick = max if higher_is_better else min
    best = pick(sorted(means, key=lambda x: (x is None, x if x is not None else 0.0)), key=lambda lr: means[lr])
    group = by_lr[best]
    return Selection(means[best], best, len(group), tuple(str(r.get("run_id", "")) for r, _ in group), smoke, custom)


def _recipe_matches(row: dict[str, Any], recipes: Iterable[str]) -> bool:
    """A row without a recipe (imported from a CSV) matches any recipe of the setting."""
    return row.get("recipe") in (None, "") or row.get("recipe") in recipes


def index_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    index: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        index.setdefault((r["backbone"], r["dataset"]), []).append(r)
    return index


def select_cell(rows, backbone: str, *, recipes: Iterable[str], datasets: Iterable[str], metric: str,
                select: str = "best_lr", higher_is_better: bool = True, experiment: str | None = None,
                setting: str = "") -> Cell:
    """The one cell selector. rows: finished_results() records, or index_rows() of them (faster for
    whole tables). Parts are (recipe, dataset) pairs; each part's runs combine by `select`; the cell is
    the mean of the parts found. A row without a recipe (an imported CSV) counts for the first recipe.
    With `experiment`, a part uses that experiment's own runs when it has some (rows of other
    experiments, or of none, feed it otherwise)."""
    index = rows if isinstance(rows, dict) else index_rows(rows)
    recipes, datasets = list(recipes), list(datasets)
    parts: dict[str, Selection] = {}
    for recipe in recipes:
        for dataset in datasets:
            mine = [r for r in index.get((backbone, dataset), ())
                    if r.get("recipe") == recipe or (r.get("recipe") in (None, "") and recipe == recipes[0])]
            if experiment is not None:
                own = [r for r in mine if r.get("experiment") == experiment]
                mine = own or mine
            sel = select_runs(mine, metric, select, higher_is_better)
            if sel is not None:
                parts[part_key(recipe, dataset)] = sel
    value = sum(p.value for p in parts.values()) / len(parts) if parts else None
    return Cell(backbone, setting, value, parts, len(recipes) * len(datasets),
                bool(parts) and all(p.smoke for p in parts.values()),
                any(p.custom for p in parts.values()))


def setting_cell(catalog, setting: Setting, backbone: str, rows, experiment: str | None = None) -> Cell:
    """A table setting's cell for one backbone (select_cell with the setting's recipes, datasets, rule)."""
    return select_cell(rows, backbone, recipes=setting.recipes, datasets=setting.datasets, metric=setting.metric,
                       select=setting.select, higher_is_better=setting.higher_is_better, experiment=experiment,
                       setting=setting.id)


def _table_backbones(catalog, experiment, rows: list[dict[str, Any]]) -> list[str]:
    recipes = {r for s in experiment.table.settings for r in s.recipes}
    order: list[str] = []
    for g in experiment.grid:
        if g.recipe in recipes or not recipes:
            order += [b for b in g.backbones if b not in order]
    for pv in catalog.published:
        if pv.experiment == experiment.id and not pv.backbone.startswith("group:"):
            b = canonical_backbone(catalog, pv.backbone)
            if b not in order:
                order.append(b)
    for r in rows:
        if r["backbone"] not in order:
            order.append(r["backbone"])
    return order


def normalise_rows(catalog, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with backbone aliases mapped to ids (imported CSVs use the authors' names)."""
    out = []
    for r in rows:
        b = canonical_backbone(catalog, r["backbone"])
        out.append(r if b == r["backbone"] else {**r, "backbone": b})
    return out


def experiment_table(catalog, experiment_id: str, rows: list[dict[str, Any]]) -> ExperimentTable:
    """The experiment's table from finished_results() records (any experiment's runs may feed it)."""
    if experiment_id not in catalog.experiments:
        raise unknown_id("experiment", experiment_id, sorted(catalog.experiments))
    exp = catalog.experiments[experiment_id]
    spec = exp.table
    rows = normalise_rows(catalog, rows)
    datasets = {d for s in spec.settings for d in s.datasets}
    recipes = {r for s in spec.settings for r in s.recipes}
    rows = [r for r in rows if r["dataset"] in datasets and _recipe_matches(r, recipes)]
    backbones = _table_backbones(catalog, exp, rows)
    notes: list[str] = []
    if spec.params_below_m is not None:
        limit = spec.params_below_m
        unknown = [b for b in backbones if b not in catalog.backbones]
        backbones = [b for b in backbones if b in catalog.backbones and catalog.backbones[b].params_m < limit]
        notes.append(f"restricted to backbones under {limit:g}M parameters")
        if unknown:
            notes.append(f"left out (size unknown, not in the manifests): {', '.join(unknown)}")
    cells: dict[tuple[str, str], Cell] = {}
    index = index_rows(rows)
    for s in spec.settings:
        for b in backbones:
            c = setting_cell(catalog, s, b, index, experiment=experiment_id)
            if c.parts:
                cells[(b, s.id)] = c
    smoke = any(c.smoke for c in cells.values())
    if smoke:
        notes.insert(0, SMOKE_NOTE)
    if any(c.custom for c in cells.values()):
        notes.insert(0, CUSTOM_NOTE)
    ranking = None
    if spec.kind == "ranking" and cells:
        ranking = rank_cells(spec.settings, backbones, cells, task_groups(catalog, spec.settings))
        notes.append(RANKING_RULE)
    return ExperimentTable(exp.id, exp.title, spec.kind, list(spec.settings), backbones, cells, ranking,
                           spec.top_k, spec.params_below_m, smoke, notes)


def task_groups(catalog, settings: list[Setting]) -> dict[str, str]:
    """Setting → the task family of its datasets (the level BoB combines settings at before the overall)."""
    out = {}
    for s in settings:
        tasks = {catalog.datasets[d].task for d in s.datasets if d in catalog.datasets}
        out[s.id] = tasks.pop() if len(tasks) == 1 else s.id
    return out


def rank_cells(settings: list[Setting], backbones: list[str], cells: dict[tuple[str, str], Cell],
               groups: dict[str, str] | None = None) -> Ranking:
    parts: dict[str, dict[str, dict[str, float]]] = {}
    for s in settings:
        by_part: dict[str, dict[str, float]] = {}
        for b in backbones:
            c = cells.get((b, s.id))
            for key, sel in (c.parts.items() if c else ()):
                by_part.setdefault(key, {})[b] = sel.value
        parts[s.id] = by_part
    return rank_backbones(parts, {s.id: s.higher_is_better for s in settings}, groups)


def format_value(value: float | None, metric: str | None = None) -> str:
    """Fractions print as percentages with one decimal; an empty cell as a dash."""
    if value is None:
        return "–"
    return f"{100 * value:.1f}"


def to_json(table: ExperimentTable) -> dict[str, Any]:
    def sel_json(sel: Selection) -> dict[str, Any]:
        return {"value": sel.value, "lr": sel.lr, "n_runs": sel.n_runs, "run_ids": list(sel.run_ids),
                "smoke": sel.smoke}

    data: dict[str, Any] = {
        "experiment": table.experiment, "title": table.title, "kind": table.kind, "smoke": table.smoke,
        "notes": table.notes, "top_k": table.top_k, "params_below_m": table.params_below_m,
        "settings": [s.model_dump(mode="json") for s in table.settings],
        "backbones": table.backbones,
        "cells": [{"backbone": c.backbone, "setting": c.setting, "value": c.value, "complete": c.complete,
                   "smoke": c.smoke, "parts": {k: sel_json(p) for k, p in c.parts.items()}}
                  for c in table.cells.values()],
    }
    if table.ranking is not None:
        data["ranking"] = {
            "rule": table.ranking.rule,
            "overall": [{"backbone": e.backbone, "rank": e.rank, "score": e.score, "settings": e.settings,
                         "groups": e.groups}
                        for e in table.ranking.entries],
            "settings": table.ranking.setting_ranks,
            "groups": table.ranking.group_ranks,
        }
    return data


def ranking_columns(table: ExperimentTable) -> list[tuple[str, str]]:
    """(name, title) of a ranking's columns: task groups where the table has them, else settings."""
    if table.ranking is None:
        return []
    if table.ranking.group_ranks:
        return [(g, g) for g in table.ranking.group_ranks]
    return [(s.id, s.title) for s in table.settings if s.id in table.ranking.setting_ranks]


def render_rich(table: ExperimentTable):
    """A rich Table: values in percent (cells tables) or z-scores with ranks (ranking tables)."""
    from rich.table import Table

    title = f"{table.experiment}: {table.title}"
    if table.smoke:
        title += "  [bold yellow](SMOKE)[/]"
    t = Table(title=title, caption="\n".join(table.notes) or None, caption_justify="left")
    t.add_column("backbone")
    if table.ranking is not None:
        cols = ranking_columns(table)
        t.add_column("rank", justify="right")
        t.add_column("overall z", justify="right")
        for _, col_title in cols:
            t.add_column(f"{col_title}\nz (rank)", justify="right")
        for e in table.ranking.entries:
            row = [e.backbone, str(e.rank), f"{e.score:+.2f}"]
            for name, _ in cols:
                z = table.ranking.score(e.backbone, name)
                row.append("–" if z is None else f"{z:+.2f} ({table.ranking.order(name)[e.backbone]})")
            t.add_row(*row)
        return t
    for s in table.settings:
        t.add_column(f"{s.title}\n({s.metric} %)", justify="right")
    for b in table.backbones:
        row = [b]
        for s in table.settings:
            c = table.cell(b, s.id)
            text = format_value(c.value if c else None)
            if c is not None and not c.complete:
                text += "*"
            row.append(text)
        t.add_row(*row)
    if any(not c.complete for c in table.cells.values()):
        t.caption = (t.caption + "\n" if t.caption else "") + "* some of the setting's runs are missing"
    return t

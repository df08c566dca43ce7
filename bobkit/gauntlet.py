"""`bobkit gauntlet`: put a new backbone through BoB's tasks and say where it ranks.

The gauntlet is an in-memory experiment `gauntlet-<backbone>` made from the grid of table2 (table3's
smoke subset for --budget smoke): the same recipes, datasets, learning-rate grids and seeds the paper's
backbones get, for the chosen task families. plan() turns it into RunSpecs, an executor runs them,
and the table is ranked with bobkit.tables (the z-score rule of `bobkit report`) among:

- the published values of the paper's backbones (the manifests' published retrieval MRR table),
- finished runs of the paper's backbones anywhere in the runs folder (a published value wins over a
  run of the same backbone and dataset),
- for --budget smoke only: smoke runs of reference backbones (table3's smoke backbones), run by the
  gauntlet itself so the ranking has peers. Smoke numbers are never ranked with real ones.

Budgets (BUDGETS): smoke = table3's smoke grid on synthetic data (CPU, minutes); quick = linear probe
and retrieval only (QUICK_RECIPES; one GPU, hours); full = every run of table2 for the backbone.
Pure: no torch, no files (the command module runs and writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from bobkit.errors import BadInput, unknown_id
from bobkit.manifest.models import Experiment, GridEntry, SmokeSubset, TableSpec

BUDGETS = ("smoke", "quick", "full")
TASK_ORDER = ("classification", "detection", "ood_classification", "ood_detection", "retrieval")
REFERENCE = {"smoke": "table3", "quick": "table2", "full": "table2"}
QUICK_RECIPES = ("linear_probe", "retrieval_frozen", "retrieval_cub200", "retrieval_first50", "retrieval_inat")
PUBLISHED_EXPERIMENTS = ("retrieval",)  # experiments whose published numbers are per-backbone values
SMOKE_WARNING = ("SMOKE gauntlet: synthetic data, untrained backbones, a few steps at 32 px. It tests that the "
                 "backbone goes through every task; its ranks are NOT comparable with the paper's.")


def experiment_id(backbone_id: str) -> str:
    return f"gauntlet-{backbone_id}"


@dataclass
class Gauntlet:
    """What one `bobkit gauntlet` call runs and ranks."""

    backbone: str
    budget: str
    tasks: list[str]
    experiment: Experiment
    catalog: Any  # the Catalog with the gauntlet experiment added
    peers: list[str]
    left_out: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.experiment.id

    @property
    def smoke(self) -> bool:
        return self.budget == "smoke"


def parse_tasks(text: str | None) -> list[str] | None:
    if not text:
        return None
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    for t in tasks:
        if t not in TASK_ORDER:
            raise BadInput(f"--tasks: unknown task '{t}'; choose from {', '.join(TASK_ORDER)}")
    return [t for t in TASK_ORDER if t in tasks]


def _paper_backbones(catalog) -> set[str]:
    return {b for e in ("table2", "table3") if e in catalog.experiments
            for g in catalog.experiments[e].grid for b in g.backbones}


def default_peers(catalog, budget: str) -> list[str]:
    """Smoke: table3's smoke backbones (run alongside); quick/full: none are run, the published values rank."""
    return list(catalog.experiments[REFERENCE[budget]].smoke.backbones) if budget == "smoke" else []


def build_gauntlet(catalog, backbone_id: str, *, tasks: Iterable[str] | None = None, budget: str = "quick",
                   peers: Iterable[str] | None = None) -> Gauntlet:
    """The gauntlet experiment of one backbone, added to a copy of the catalog."""
    if budget not in BUDGETS:
        raise BadInput(f"--budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    entry = catalog.backbone_by_alias(backbone_id)
    if entry is None:
        raise unknown_id("backbone", backbone_id, sorted(catalog.backbones))
    asked = list(tasks) if tasks else None
    chosen = [t for t in TASK_ORDER if t in (asked or entry.tasks)]
    unsupported = [t for t in chosen if t not in entry.tasks]
    if unsupported:
        raise BadInput(f"backbone '{entry.id}' does not list {', '.join(unsupported)} in its manifest `tasks` "
                       f"({', '.join(entry.tasks)}); add them there or leave them out of --tasks")
    ref = catalog.experiments[REFERENCE[budget]]
    peer_ids = default_peers(catalog, budget) if peers is None else list(peers)
    for p in peer_ids:
        if p not in catalog.backbones:
            raise unknown_id("backbone", p, sorted(catalog.backbones))
    peer_ids = [p for p in dict.fromkeys(peer_ids) if p != entry.id]
    left_out: list[str] = []
    grid: list[GridEntry] = []
    smoke_datasets = set(ref.smoke.datasets)
    for g in ref.grid:
        recipe = catalog.recipes[g.recipe]
        if recipe.task not in chosen:
            continue
        if budget == "quick" and g.recipe not in QUICK_RECIPES:
            left_out.append(f"{g.recipe} ({recipe.task}: {', '.join(g.datasets)})")
            continue
        datasets = [d for d in g.datasets if budget != "smoke" or d in smoke_datasets]
        if not datasets:
            continue
        members = [entry.id] + [p for p in peer_ids if p in g.backbones or budget == "smoke"]
        grid.append(g.model_copy(update={"backbones": members, "datasets": datasets}))
    if budget == "quick":
        skipped = [t for t in chosen if not any(catalog.recipes[g.recipe].task == t for g in grid)]
        left_out += [f"every {t} run (quick runs linear probes and retrieval only)" for t in skipped]
    if not grid:
        raise BadInput(f"--budget {budget} with tasks {', '.join(chosen) or 'none'} leaves no run for "
                       f"'{entry.id}'; choose other --tasks or --budget full")
    kept = {(g.recipe, d) for g in grid for d in g.datasets}
    settings = [s for s in ref.table.settings
                if all((r, d) in kept for r in s.recipes for d in s.datasets)]
    exp = Experiment(
        id=experiment_id(entry.id), title=f"Gauntlet: {entry.name} ({budget})",
        description=(f"{entry.name} through the runs of {ref.id} ({', '.join(chosen)}), ranked among the paper's "
                     "backbones with bobkit's z-score rule."),
        source=f"bobkit gauntlet: the grid and settings of {ref.id}", confidence="bobkit",
        grid=grid, table=TableSpec(kind="ranking", settings=settings, top_k=ref.table.top_k),
        metrics=list(ref.metrics), smoke=SmokeSubset(),
    )
    with_exp = replace(catalog, experiments={**catalog.experiments, exp.id: exp},
                       origin={**catalog.origin, ("experiments", exp.id): catalog.origin[("experiments", ref.id)]})
    ran_tasks = [t for t in chosen if any(catalog.recipes[g.recipe].task == t for g in grid)]
    return Gauntlet(entry.id, budget, ran_tasks, exp, with_exp, peer_ids, left_out)


def plan_runs(g: Gauntlet, faithful: bool = False, sets: dict[str, Any] | None = None):
    """plan() of the gauntlet experiment; quick runs ask for one GPU (the runner accumulates gradients up to
    the recipe's effective batch, so the linear probe's 4-GPU recipe trains with the same batch on one).
    `sets` (--set) apply as in `reproduce`: their runs are shown, never compared with published numbers."""
    from bobkit.plan import RunSpec, plan, run_id

    specs = plan(g.catalog, g.id, smoke=g.smoke, faithful=faithful, sets=sets)
    if g.budget != "quick":
        return specs
    out = []
    for s in specs:
        body = s.model_dump(mode="json", exclude={"id"})
        body["gpus"] = 1
        out.append(s if s.gpus == 1 else RunSpec(id=run_id(body), **body))
    return out


# ------------------------------------------------------------------------------------- ranking

def published_rows(g: Gauntlet) -> list[dict[str, Any]]:
    """The paper's published per-backbone values, as rows of the gauntlet experiment (none for smoke)."""
    if g.smoke:
        return []
    from bobkit.report import published_rows as rows_of

    out = []
    for exp in PUBLISHED_EXPERIMENTS:
        if exp in g.catalog.experiments:
            out += [{**r, "experiment": g.id, "published": True} for r in rows_of(g.catalog, exp)]
    return out


def comparable_rows(g: Gauntlet, run_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """This backbone's runs, plus finished runs of the paper's backbones (and the peers): smoke with smoke,
    real with real. A published value of a backbone and dataset replaces its runs."""
    published = published_rows(g)
    have = {(r["backbone"], r["dataset"]) for r in published}
    paper = _paper_backbones(g.catalog) | set(g.peers)
    rows = []
    for r in run_rows:
        if bool(r.get("smoke")) != g.smoke:
            continue
        if r["backbone"] != g.backbone and r["backbone"] not in paper:
            continue
        if r["backbone"] != g.backbone and (r["backbone"], r["dataset"]) in have:
            continue
        rows.append(r)
    return published + rows


@dataclass
class Standing:
    """Where the backbone ranks: overall and per task family (rank, of how many, z-score)."""

    backbone: str
    overall: tuple[int, int, float] | None
    tasks: dict[str, tuple[int, int, float]]
    settings: dict[str, tuple[int, int, float]]
    missing_settings: list[str]

    def to_json(self) -> dict[str, Any]:
        def one(x):
            return None if x is None else {"rank": x[0], "of": x[1], "z": x[2]}

        return {"backbone": self.backbone, "overall": one(self.overall),
                "tasks": {k: one(v) for k, v in self.tasks.items()},
                "settings": {k: one(v) for k, v in self.settings.items()}, "missing_settings": self.missing_settings}


def standing(catalog, table, backbone: str) -> Standing:
    ranking = table.ranking
    settings_ids = [s.id for s in table.settings]
    if ranking is None or ranking.score(backbone) is None:
        return Standing(backbone, None, {}, {}, settings_ids)
    overall_ranks = ranking.order()
    tasks = {}
    for name, ranks in ranking.group_ranks.items():
        if backbone in ranks:
            tasks[name] = (ranks[backbone], len(ranks), ranking.score(backbone, name))
    settings = {}
    for sid, ranks in ranking.setting_ranks.items():
        if backbone in ranks:
            settings[sid] = (ranks[backbone], len(ranks), ranking.score(backbone, sid))
    # a task family with one setting is not a group of its own in Ranking: report it through its setting
    from bobkit.tables import task_groups

    for sid, task in task_groups(catalog, table.settings).items():
        if task not in tasks and sid in settings and task != sid:
            tasks[task] = settings[sid]
    return Standing(backbone, (overall_ranks[backbone], len(overall_ranks), ranking.score(backbone)),
                    tasks, settings, [s for s in settings_ids if s not in settings])


def rank(g: Gauntlet, run_rows: Iterable[dict[str, Any]]):
    """The rows ranked, the ranked table, and the backbone's standing in it."""
    from bobkit.tables import experiment_table

    rows = comparable_rows(g, run_rows)
    table = experiment_table(g.catalog, g.id, rows)
    return rows, table, standing(g.catalog, table, g.backbone)

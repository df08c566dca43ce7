"""Published vs reproduced: a verdict per published cell, with the tolerance that decided it.

Tiers (manifests/tolerances.yaml states every threshold; each verdict prints its rule):
- eval  a fixed checkpoint evaluated again: |Δ| ≤ max(floor, the published value's rounding);
- train one retrain: |Δ| ≤ max(k × SE, floor), SE = √(p(1−p)/n) with n the evaluation split's size;
- rank  orderings: Spearman ρ and Kendall τ of reproduced vs published orderings, top-k agreement.
Beyond a tolerance, up to `warn_multiplier` tolerances is 'warn'; further is 'fail'. A published value
with no reproduced counterpart is 'missing'; one reproduced only by smoke runs is 'smoke', and one
reproduced only by runs with `--set` values (a user's configuration) is 'custom': neither is ever
compared; tier 'info' values are shown, not judged. A cell's runs are chosen by the one cell selector
(bobkit.tables.select_cell), as in the tables and reports.

Pure: no torch, no files. Values are compared in percentage points (pp) for fraction/percent units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Iterable

from bobkit.errors import BadInput
from bobkit.manifest.models import PublishedValue, Tolerance
from bobkit.ranking import kendall, rank_backbones, spearman
from bobkit.tables import canonical_backbone, experiment_table, index_rows, normalise_rows, select_cell, task_groups

STATUSES = ("pass", "warn", "fail", "missing", "smoke", "custom", "info")
LEVELS = {"fail": ("fail",), "warn": ("warn", "fail"), "missing": ("missing", "warn", "fail")}
EPS = 1e-9
RANK_ROW = "(ranking)"


@dataclass(frozen=True)
class Verdict:
    experiment: str
    backbone: str
    dataset: str
    metric: str
    tier: str
    status: str
    published: float | None = None
    reproduced: float | None = None
    delta: float | None = None
    tolerance: float | None = None
    unit: str = "pp"
    rule: str = ""
    tolerance_id: str | None = None
    source: str = ""
    confidence: str = ""
    detail: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.backbone}/{self.dataset}/{self.metric}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    verdicts: list[Verdict]
    tolerances: list[Tolerance]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for v in self.verdicts:
            out[v.status] += 1
        return out

    def holds(self, fail_on: str = "fail") -> bool:
        if fail_on not in LEVELS:
            raise BadInput(f"--fail-on {fail_on!r}: choose one of {', '.join(LEVELS)}")
        bad = LEVELS[fail_on]
        return not any(v.status in bad for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts(), "notes": self.notes,
                "tolerances": [t.model_dump(mode="json") for t in self.tolerances],
                "verdicts": [v.to_json() for v in self.verdicts]}


# ----------------------------------------------------------------------------------- tolerances

def pick_tolerance(catalog, tier: str, task: str | None, metric: str) -> Tolerance:
    """The most specific tolerance of a tier: task+metric, task, metric, generic."""
    best, best_score = None, -1
    for tol in catalog.tolerances.values():
        if tol.tier != tier:
            continue
        if tol.tasks and task not in tol.tasks:
            continue
        if tol.metrics and metric not in tol.metrics:
            continue
        score = 2 * bool(tol.tasks) + bool(tol.metrics)
        if score > best_score:
            best, best_score = tol, score
    if best is None:
        raise BadInput(f"no '{tier}' tolerance for task {task or '?'} / metric {metric} in the manifests; "
                       "add one to a tolerances.yaml (see manifests/tolerances.yaml)")
    return best


def rounding_pp(value: float, unit: str) -> float:
    """Half a unit of the published value's last written digit, in pp."""
    exponent = Decimal(repr(value)).as_tuple().exponent
    half = 0.5 * 10.0 ** exponent if isinstance(exponent, int) else 0.0
    return half * (100.0 if unit == "fraction" else 1.0)


def to_pp(value: float, unit: str) -> float:
    return value * 100.0 if unit == "fraction" else value


def eval_images(catalog, datasets: Iterable[str]) -> list[int | None]:
    """The evaluation split size of each dataset: eval, else test, else query."""
    out = []
    for d in datasets:
        ds = catalog.datasets.get(d)
        n = None
        if ds is not None:
            for role in ("eval", "test", "query"):
                split = ds.splits.get(role)
                if split is not None and split.images:
                    n = split.images
                    break
        out.append(n)
    return out


def standard_error_pp(p: float, ns: list[int | None]) -> float | None:
    """Binomial SE of a mean over datasets, in pp; None if a size is unknown."""
    if not ns or any(n is None for n in ns):
        return None
    p = min(max(p, 0.0), 1.0)
    var = sum(p * (1 - p) / n for n in ns) / len(ns) ** 2
    return 100.0 * math.sqrt(var)


def warn_text(multiplier: float) -> str:
    return "no warn band" if multiplier <= 1 else f"warn ≤ {multiplier:g}× that"


def tolerance_text(tol: Tolerance) -> str:
    """A tolerance entry in one line, as printed under every verify table and report."""
    if tol.tier == "eval":
        rounding = "published rounding" if tol.rounding else "0"
        return f"|Δ| ≤ max({tol.min_abs_pp:g} pp, {rounding}); " + warn_text(tol.warn_multiplier)
    if tol.tier == "train":
        scope = f" for {', '.join(tol.tasks)}" if tol.tasks else ""
        return f"|Δ| ≤ max({tol.se_multiplier:g}×SE, {tol.min_abs_pp:g} pp){scope}; " + warn_text(tol.warn_multiplier)
    parts = []
    if tol.min_spearman is not None:
        parts.append(f"Spearman ρ ≥ {tol.min_spearman:g}")
    if tol.top_k is not None:
        parts.append(f"the same top-{tol.top_k}")
    return " and ".join(parts) + "; one of the two: warn"


def judge(delta: float, tol: float, warn_multiplier: float) -> str:
    a = abs(delta)
    if a <= tol * (1 + EPS) + EPS:
        return "pass"
    if a <= warn_multiplier * tol * (1 + EPS) + EPS:
        return "warn"
    return "fail"


# ----------------------------------------------------------------------------------- cell lookup

@dataclass(frozen=True)
class Target:
    """Which runs reproduce a published value."""

    recipes: tuple[str, ...]
    datasets: tuple[str, ...]
    select: str
    higher_is_better: bool
    task: str | None


def target_for(catalog, pv: PublishedValue) -> Target:
    exp = catalog.experiments.get(pv.experiment)
    settings = list(exp.table.settings) if exp else []
    for s in settings:
        if s.id == pv.dataset:
            return Target(tuple(s.recipes), tuple(s.datasets), s.select, s.higher_is_better, _task(catalog, s.datasets))
    matching = [s for s in settings if pv.dataset in s.datasets]
    matching.sort(key=lambda s: s.metric != pv.metric)
    if matching:
        s = matching[0]
        return Target(tuple(s.recipes), (pv.dataset,), s.select, s.higher_is_better, _task(catalog, [pv.dataset]))
    recipes = tuple(dict.fromkeys(g.recipe for g in (exp.grid if exp else []) if pv.dataset in g.datasets))
    return Target(recipes, (pv.dataset,), "best_lr", True, _task(catalog, [pv.dataset]))


def _task(catalog, datasets: Iterable[str]) -> str | None:
    for d in datasets:
        if d in catalog.datasets:
            return catalog.datasets[d].task
    return None


class RowIndex:
    """Finished-run records indexed by (backbone, dataset), aliases resolved; cells come from the one
    cell selector (bobkit.tables.select_cell), as in the tables and reports."""

    def __init__(self, catalog, rows: Iterable[dict[str, Any]]) -> None:
        self.by_cell = index_rows(normalise_rows(catalog, rows))

    def value(self, experiment: str, backbone: str, target: Target, metric: str):
        """(value as a fraction, smoke?, runs used, --set values?) when every part has a run, else None."""
        recipes = target.recipes or tuple(sorted({str(r.get("recipe") or "") for d in target.datasets
                                                  for r in self.by_cell.get((backbone, d), ())}))
        cell = select_cell(self.by_cell, backbone, recipes=recipes, datasets=target.datasets,
                           metric=metric, select=target.select, higher_is_better=target.higher_is_better,
                           experiment=experiment)
        if not cell.parts or not cell.complete:
            return None
        return cell.value, cell.smoke, cell.n_runs, cell.custom


# ----------------------------------------------------------------------------------- value tiers

def value_verdict(catalog, pv: PublishedValue, index: RowIndex) -> Verdict:
    base = dict(experiment=pv.experiment, backbone=canonical_backbone(catalog, pv.backbone), dataset=pv.dataset,
                metric=pv.metric, tier=pv.tier, source=pv.source, confidence=pv.confidence)
    if pv.unit not in ("fraction", "percent"):
        return Verdict(**base, status="info", published=pv.value, unit=pv.unit,
                       detail=f"unit '{pv.unit}' is shown, not compared cell by cell")
    published_pp = to_pp(pv.value, pv.unit)
    target = target_for(catalog, pv)
    if pv.tier == "info":
        return Verdict(**base, status="info", published=published_pp, detail="tier 'info': shown, not judged")
    tol = pick_tolerance(catalog, pv.tier, target.task, pv.metric)
    found = index.value(pv.experiment, base["backbone"], target, pv.metric)
    if pv.tier == "eval":
        rnd = rounding_pp(pv.value, pv.unit) if tol.rounding else 0.0
        limit = max(tol.min_abs_pp, rnd)
        rule = (f"eval '{tol.id}': |Δ| ≤ max({tol.min_abs_pp:g} pp, rounding {rnd:.3g} pp) = {limit:.3g} pp; "
                + warn_text(tol.warn_multiplier))
    else:
        p = published_pp / 100.0
        ns = eval_images(catalog, target.datasets)
        se = standard_error_pp(p, ns)
        if se is None:
            limit = tol.min_abs_pp
            rule = (f"train '{tol.id}': |Δ| ≤ floor {tol.min_abs_pp:g} pp (evaluation set size unknown, no SE); "
                    + warn_text(tol.warn_multiplier))
        else:
            limit = max(tol.se_multiplier * se, tol.min_abs_pp)
            n_text = "+".join(str(n) for n in ns)
            rule = (f"train '{tol.id}': |Δ| ≤ max({tol.se_multiplier:g}×SE {tol.se_multiplier * se:.3g} pp "
                    f"[n={n_text}], floor {tol.min_abs_pp:g} pp) = {limit:.3g} pp; "
                    + warn_text(tol.warn_multiplier))
    common = dict(**base, published=published_pp, tolerance=limit, rule=rule, tolerance_id=tol.id)
    if found is None:
        return Verdict(**common, status="missing", detail="no finished run reproduces this cell")
    value, smoke, n_runs, custom = found
    reproduced = 100.0 * value
    if smoke:
        return Verdict(**common, status="smoke", reproduced=reproduced,
                       detail="smoke result (synthetic data, untrained backbone): not compared")
    if custom:
        return Verdict(**common, status="custom", reproduced=reproduced,
                       detail="from runs with --set values (not the paper's configuration): not compared")
    delta = reproduced - published_pp
    return Verdict(**common, status=judge(delta, limit, tol.warn_multiplier), reproduced=reproduced, delta=delta,
                   detail=f"{n_runs} run(s)")


# ----------------------------------------------------------------------------------- rank tier

def rank_base(catalog, *, experiment: str, dataset: str, metric: str, task: str | None, source: str,
              confidence: str, cap: int | None = None) -> dict[str, Any]:
    """The fields every rank verdict carries, the tolerance and its rule included."""
    tol = pick_tolerance(catalog, "rank", task, metric)
    k = tol.top_k if tol.top_k is None or cap is None else min(tol.top_k, cap)
    k_text = f"top-{k} sets equal" if k else "no top-k"
    rho_text = f"{tol.min_spearman:g}" if tol.min_spearman is not None else "–"
    rule = f"rank '{tol.id}': pass needs Spearman ρ ≥ {rho_text} and {k_text}; one of the two: warn"
    return dict(experiment=experiment, backbone=RANK_ROW, dataset=dataset, metric=metric, tier="rank", unit="rho",
                rule=rule, tolerance=tol.min_spearman, tolerance_id=tol.id, source=source, confidence=confidence)


def compare_orderings(catalog, *, experiment: str, dataset: str, published_rank: dict[str, float],
                      reproduced_rank: dict[str, float], source: str, confidence: str,
                      metric: str = "rank", task: str | None = None) -> Verdict:
    """Spearman/Kendall over the backbones both orderings rank (rank 1 = best) and top-k agreement.

    k is the tolerance's top_k, capped by the deepest published rank (prose often names only a top 3).
    """
    k = None
    if published_rank:
        k = int(max(published_rank.values()))
    base = rank_base(catalog, experiment=experiment, dataset=dataset, metric=metric, task=task, source=source,
                     confidence=confidence, cap=k)
    tol = catalog.tolerances[base["tolerance_id"]]
    k = tol.top_k if tol.top_k is None or k is None else min(tol.top_k, k)
    lacking = sorted(b for b in published_rank if b not in reproduced_rank)
    if lacking:
        return Verdict(**base, status="missing",
                       detail=f"no reproduced score for {', '.join(lacking)}",
                       stats={"published_order": _ordered(published_rank)})
    common = sorted(published_rank)
    pub = [published_rank[b] for b in common]
    rep = [reproduced_rank[b] for b in common]
    rho = spearman(pub, rep)
    tau = kendall(pub, rep)
    checks = []
    if tol.min_spearman is not None and rho is not None:
        checks.append(rho >= tol.min_spearman - EPS)
    top_pub = top_rep = None
    if k:
        top_pub = sorted(b for b, r in published_rank.items() if r <= k)
        top_rep = sorted(b for b, r in reproduced_rank.items() if r <= k)
        checks.append(top_pub == top_rep)
    if not checks:
        return Verdict(**base, status="info", detail="too few backbones to judge an ordering")
    status = "pass" if all(checks) else ("warn" if any(checks) else "fail")
    stats = {"n": len(common), "spearman": rho, "kendall": tau, "top_k": k, "published_top": top_pub,
             "reproduced_top": top_rep, "published_order": _ordered(published_rank),
             "reproduced_order": _ordered({b: reproduced_rank[b] for b in reproduced_rank})}
    detail = f"ρ={_fmt(rho)} τ={_fmt(tau)} over {len(common)} backbones"
    if k:
        detail += f"; top-{k} {'agree' if top_pub == top_rep else 'differ'}"
    return Verdict(**base, status=status, published=None, reproduced=rho, detail=detail, stats=stats)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _ordered(ranks: dict[str, float]) -> list[str]:
    return sorted(ranks, key=lambda b: (ranks[b], b))


def _ranks_from_values(values: dict[str, float], higher_is_better: bool = True) -> dict[str, float]:
    from bobkit.ranking import competition_ranks

    return {b: float(r) for b, r in competition_ranks(
        {b: (v if higher_is_better else -v) for b, v in values.items()}).items()}


def rank_verdicts(catalog, experiment_id: str, rows: list[dict[str, Any]], published: list[PublishedValue]) -> list[Verdict]:
    """Rank-tier verdicts of one experiment: published rank lists, and orderings implied by published cells."""
    exp = catalog.experiments.get(experiment_id)
    if exp is None:
        return []
    out: list[Verdict] = []
    real_rows = [r for r in rows if not r.get("smoke") and not r.get("user_set")]
    table = experiment_table(catalog, experiment_id, real_rows)
    ranked = [pv for pv in published if pv.unit == "rank"]
    groups: dict[str, list[PublishedValue]] = {}
    for pv in ranked:
        groups.setdefault(pv.dataset, []).append(pv)
    for dataset, pvs in groups.items():
        published_rank = {canonical_backbone(catalog, pv.backbone): pv.value for pv in pvs}
        setting = None if dataset == "overall" else dataset
        reproduced: dict[str, float] = {}
        if table.ranking is not None:
            reproduced = {b: float(r) for b, r in table.ranking.order(setting).items() if b in table.backbones}
        src = "; ".join(sorted({pv.source for pv in pvs}))
        conf = min((pv.confidence for pv in pvs), key=_CONFIDENCE_ORDER.index)
        gaps = _ranking_gaps(catalog, exp, table, setting)
        if gaps and table.cells:
            base = rank_base(catalog, experiment=experiment_id, dataset=dataset, metric="rank", task=None, source=src,
                             confidence=conf)
            out.append(Verdict(**base, status="missing",
                               detail=f"ranking incomplete: {gaps}; z-scores shift with every missing result"))
            continue
        v = compare_orderings(catalog, experiment=experiment_id, dataset=dataset, published_rank=published_rank,
                              reproduced_rank=reproduced, source=src, confidence=conf)
        if v.status == "missing" and not table.cells and any(r.get("smoke") for r in rows):
            v = Verdict(**{**v.to_json(), "status": "smoke",
                           "detail": "only smoke results (synthetic data): ranking not compared"})
        out.append(v)
    values = [pv for pv in published if pv.unit in ("fraction", "percent") and pv.tier != "info"]
    out += _cell_ordering_verdicts(catalog, exp, table, values)
    out += correlation_verdicts(catalog, table, published)
    return out


def _ranking_gaps(catalog, exp, table, name: str | None) -> str:
    """'' when every (backbone, recipe, dataset) the experiment's grid plans for the ranked settings has a
    result; else a summary. Without a grid, every backbone × setting part is expected."""
    from bobkit.tables import part_key, task_groups

    groups = task_groups(catalog, table.settings)
    settings = [s for s in table.settings if name in (None, "overall") or s.id == name or groups.get(s.id) == name]
    keys = {s.id: {part_key(r, d) for r in s.recipes for d in s.datasets} for s in settings}
    expected: set[tuple[str, str, str]] = set()
    if exp.grid:
        for g in exp.grid:
            for b in g.backbones:
                if b not in table.backbones:
                    continue
                for d in g.datasets:
                    key = part_key(g.recipe, d)
                    expected |= {(b, sid, key) for sid, ks in keys.items() if key in ks}
    else:
        expected = {(b, sid, key) for b in table.backbones for sid, ks in keys.items() for key in ks}
    have = {(b, sid, key) for (b, sid), c in table.cells.items() for key in c.parts}
    lacking = expected - have
    return f"{len(expected) - len(lacking)} of {len(expected)} planned results" if lacking else ""


CORRELATION_TARGETS = {"zscore_vs_params": ("params_m", "parameters"),
                       "overall_vs_pretrain_images": ("pretrain_images_m", "pretraining images")}
GROUP_NAMES = {"group:vit": "ViTs", "group:cnn": "CNNs", "group:all": "all"}
TASK_PAIRS = "task_vs_task"


def _task_pairs_verdict(pv: PublishedValue, table) -> Verdict:
    """Median Spearman ρ between the task groups' scores (the paper: typically above 0.8)."""
    base = dict(experiment=pv.experiment, backbone=pv.backbone, dataset=pv.dataset, metric=pv.metric, tier="info",
                status="info", published=pv.value, unit="rho", source=pv.source, confidence=pv.confidence,
                rule="info: shown, not judged")
    ranking = table.ranking
    if ranking is None:
        return Verdict(**base, detail="no reproduced ranking to correlate")
    names = list(ranking.group_ranks) or list(ranking.setting_ranks)
    rhos = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = [e for e in ranking.entries if a in {**e.settings, **e.groups} and b in {**e.settings, **e.groups}]
            rho = spearman([ranking.score(e.backbone, a) for e in common], [ranking.score(e.backbone, b) for e in common])
            if rho is not None:
                rhos.append(rho)
    if not rhos:
        return Verdict(**base, detail="fewer than two tasks with results")
    rhos.sort()
    median = rhos[len(rhos) // 2] if len(rhos) % 2 else (rhos[len(rhos) // 2 - 1] + rhos[len(rhos) // 2]) / 2
    return Verdict(**base, reproduced=median,
                   detail=f"median Spearman ρ over {len(rhos)} task pairs (min {rhos[0]:.2f}, max {rhos[-1]:.2f})")


def correlation_verdicts(catalog, table, published: list[PublishedValue]) -> list[Verdict]:
    """Published correlations (info tier) next to the same Spearman ρ computed from the reproduced ranking."""
    from bobkit.ranking import backbone_groups

    out = []
    for pv in published:
        if pv.unit == "rho" and pv.dataset == TASK_PAIRS:
            out.append(_task_pairs_verdict(pv, table))
            continue
        if pv.unit != "rho" or pv.dataset not in CORRELATION_TARGETS:
            continue
        attr, what = CORRELATION_TARGETS[pv.dataset]
        base = dict(experiment=pv.experiment, backbone=pv.backbone, dataset=pv.dataset, metric=pv.metric, tier="info",
                    status="info", published=pv.value, unit="rho", source=pv.source, confidence=pv.confidence,
                    rule="info: shown, not judged")
        group = GROUP_NAMES.get(pv.backbone)
        if table.ranking is None or group is None:
            out.append(Verdict(**base, detail="no reproduced ranking to correlate" if group else "unknown group"))
            continue
        scores = {e.backbone: e.score for e in table.ranking.entries}
        members = [b for b in backbone_groups(catalog, scores)[group] if getattr(catalog.backbones[b], attr)]
        rho = spearman([getattr(catalog.backbones[b], attr) for b in members], [scores[b] for b in members])
        out.append(Verdict(**base, reproduced=rho,
                           detail=f"Spearman ρ of the reproduced overall z-score vs {what} over {len(members)} "
                                  f"{group} backbones (Swin counted with ViTs)"))
    return out


def _cell_ordering_verdicts(catalog, exp, table, published: list[PublishedValue]) -> list[Verdict]:
    """Per setting (and overall by z-score): does the reproduced ordering follow the published values'?"""
    if "rank" not in {t.tier for t in catalog.tolerances.values()}:
        return []
    out = []
    pub_parts: dict[str, dict[str, dict[str, float]]] = {}
    rep_parts: dict[str, dict[str, dict[str, float]]] = {}
    complete = True
    for s in table.settings:
        pub = {canonical_backbone(catalog, pv.backbone): to_pp(pv.value, pv.unit) / 100.0 for pv in published
               if pv.metric == s.metric and (pv.dataset == s.id or (pv.dataset in s.datasets and len(s.datasets) == 1))}
        if len(pub) < 3:
            continue
        rep = {b: c.value for (b, sid), c in table.cells.items()
               if sid == s.id and b in pub and c.value is not None and not c.smoke}
        pub_parts[s.id], rep_parts[s.id] = {s.id: pub}, {s.id: rep}
        metric = f"{s.metric} ordering"
        lacking = sorted(set(pub) - set(rep))
        if lacking:
            complete = False
            out.append(_missing_ordering(catalog, exp.id, s.id, metric, lacking))
            continue
        out.append(compare_orderings(
            catalog, experiment=exp.id, dataset=s.id, metric=metric,
            published_rank=_ranks_from_values(pub, s.higher_is_better),
            reproduced_rank=_ranks_from_values(rep, s.higher_is_better),
            source="ordering of the published values", confidence="bobkit", task=_task(catalog, s.datasets)))
    if len(pub_parts) >= 2 and table.kind != "ranking":
        metric = "z-score ordering"
        if not complete:
            lacking = sorted({b for s in pub_parts for b in pub_parts[s][s] if b not in rep_parts[s][s]})
            out.append(_missing_ordering(catalog, exp.id, "overall", metric, lacking))
        else:
            higher = {s.id: s.higher_is_better for s in table.settings}
            pub_rank = rank_backbones(pub_parts, higher).order()
            rep_rank = rank_backbones(rep_parts, higher).order()
            out.append(compare_orderings(
                catalog, experiment=exp.id, dataset="overall", metric=metric,
                published_rank={b: float(r) for b, r in pub_rank.items()},
                reproduced_rank={b: float(r) for b, r in rep_rank.items()},
                source="z-score ranking of the published values (bobkit's rule)", confidence="bobkit"))
    return out


def _missing_ordering(catalog, experiment: str, setting: str, metric: str, lacking: list[str]) -> Verdict:
    more = " …" if len(lacking) > 5 else ""
    base = rank_base(catalog, experiment=experiment, dataset=setting, metric=metric, task=None,
                     source="ordering of the published values", confidence="bobkit")
    return Verdict(**base, status="missing", detail=f"no reproduced value for {len(lacking)} backbone(s): {', '.join(lacking[:5])}{more}")


_CONFIDENCE_ORDER = ["uncertain", "secondary", "quoted", "primary", "bobkit"]


# ----------------------------------------------------------------------------------- entry points

def verify(catalog, rows: list[dict[str, Any]], *, experiments: Iterable[str] | None = None) -> VerifyReport:
    """Every published value of the chosen experiments (default: all) against the given results."""
    wanted = set(experiments) if experiments else None
    if wanted:
        for e in wanted:
            if e not in catalog.experiments and not any(pv.experiment == e for pv in catalog.published):
                from bobkit.errors import unknown_id

                raise unknown_id("experiment", e, sorted(catalog.experiments))
    index = RowIndex(catalog, rows)
    by_exp: dict[str, list[PublishedValue]] = {}
    for pv in catalog.published:
        if wanted is None or pv.experiment in wanted:
            by_exp.setdefault(pv.experiment, []).append(pv)
    verdicts: list[Verdict] = []
    used: dict[str, Tolerance] = {}
    for exp_id, pvs in by_exp.items():
        for pv in pvs:
            if pv.unit == "rank" or pv.tier == "rank" or (pv.unit == "rho" and (pv.dataset in CORRELATION_TARGETS
                                                                              or pv.dataset == TASK_PAIRS)):
                continue
            verdicts.append(value_verdict(catalog, pv, index))
        verdicts += rank_verdicts(catalog, exp_id, rows, pvs)
    for v in verdicts:
        if v.tolerance_id:
            used[v.tolerance_id] = catalog.tolerances[v.tolerance_id]
    notes = []
    if any(r.get("smoke") for r in rows):
        notes.append("smoke results (synthetic data) are never compared with published numbers: verdict 'smoke'")
    custom = sorted({f"{k}={v}" for r in rows for k, v in (r.get("user_set") or {}).items()})
    if custom:
        notes.append(f"runs with --set values ({', '.join(custom[:6])}) are a configuration of your own, never "
                     "compared with published numbers: verdict 'custom'")
    if not by_exp:
        notes.append("no published value for the chosen experiment(s)")
    return VerifyReport(verdicts, list(used.values()), notes)


UNIT_RANGE = {"fraction": (0.0, 1.0), "percent": (0.0, 100.0), "rho": (-1.0, 1.0), "rank": (1.0, math.inf),
              "count": (0.0, math.inf)}


def check_published(catalog) -> VerifyReport:
    """The published tables on their own: known ids, values in range, no duplicate keys."""
    verdicts: list[Verdict] = []
    seen: dict[tuple[str, str, str, str], PublishedValue] = {}
    for pv in catalog.published:
        problems = []
        exp = catalog.experiments.get(pv.experiment)
        if exp is None:
            problems.append(f"experiment '{pv.experiment}' is not in the manifests")
        group = pv.backbone.startswith("group:")
        b = canonical_backbone(catalog, pv.backbone)
        if not group and b not in catalog.backbones:
            problems.append(f"backbone '{pv.backbone}' is not in the manifests (nor an alias)")
        settings = {s.id: s for s in exp.table.settings} if exp else {}
        rankable = {"overall", *task_groups(catalog, list(settings.values())).values()}
        known_dataset = pv.dataset in catalog.datasets or pv.dataset in settings or \
            (pv.unit == "rank" and pv.dataset in rankable) or pv.tier == "info"
        if not known_dataset:
            where = "a dataset id, a setting" + (", a task group or 'overall'" if pv.unit == "rank" else "")
            problems.append(f"dataset '{pv.dataset}' is not {where} of '{pv.experiment}'")
        lo, hi = UNIT_RANGE[pv.unit]
        if not lo <= pv.value <= hi:
            problems.append(f"value {pv.value:g} is out of range [{lo:g}, {hi:g}] for unit '{pv.unit}'")
        if pv.unit == "rank" and pv.value != int(pv.value):
            problems.append(f"rank {pv.value:g} is not a whole number")
        if pv.unit == "percent" and pv.value <= 1.0 and pv.value != 0:
            problems.append(f"value {pv.value:g} in unit 'percent' looks like a fraction")
        if pv.dataset in settings and pv.unit in ("fraction", "percent") and settings[pv.dataset].metric != pv.metric:
            problems.append(f"metric '{pv.metric}' differs from setting '{pv.dataset}' metric "
                            f"'{settings[pv.dataset].metric}'")
        key = (pv.experiment, b, pv.dataset, pv.metric)
        if key in seen:
            problems.append(f"duplicate key (also {seen[key].backbone}, value {seen[key].value:g})")
        seen.setdefault(key, pv)
        verdicts.append(Verdict(experiment=pv.experiment, backbone=pv.backbone, dataset=pv.dataset, metric=pv.metric,
                                tier="published", status="fail" if problems else "pass", published=pv.value,
                                unit=pv.unit, rule="known ids, value in the unit's range, unique key",
                                source=pv.source, confidence=pv.confidence, detail="; ".join(problems)))
    return VerifyReport(verdicts, [], [] if verdicts else ["the manifests hold no published value"])


def to_junit(report: VerifyReport, fail_on: str = "fail", suite: str = "bobkit verify") -> str:
    """JUnit XML, one testcase per verdict: failures at the --fail-on level, missing/smoke as skipped."""
    import xml.etree.ElementTree as ET

    bad = LEVELS[fail_on]
    counts = report.counts()
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(report.verdicts)),
                       failures=str(sum(counts[s] for s in bad if s in counts)),
                       skipped=str(sum(1 for v in report.verdicts if v.status in ("missing", "smoke", "custom")
                                       and v.status not in bad)))
    for v in report.verdicts:
        tc = ET.SubElement(ts, "testcase", classname=f"bobkit.verify.{v.experiment}",
                           name=f"{v.backbone}/{v.dataset}/{v.metric} [{v.tier}]")
        text = describe(v)
        if v.status in bad:
            ET.SubElement(tc, "failure", message=f"{v.status}: {text}", type=v.status).text = v.rule
        elif v.status in ("missing", "smoke", "custom"):
            ET.SubElement(tc, "skipped", message=f"{v.status}: {text}")
        else:
            ET.SubElement(tc, "system-out").text = f"{v.status}: {text}; {v.rule}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def describe(v: Verdict) -> str:
    """One line: published, reproduced, delta and tolerance (or the ordering statistics)."""
    if v.tier == "rank" and v.stats:
        s = v.stats
        text = f"{v.detail}"
        if s.get("published_top") is not None:
            text += f"; published top: {', '.join(s['published_top'])}; reproduced top: {', '.join(s['reproduced_top'])}"
        return text
    parts = []
    if v.published is not None:
        parts.append(f"published {v.published:.2f}" + ("" if v.unit == "pp" else f" {v.unit}"))
    if v.reproduced is not None:
        parts.append(f"reproduced {v.reproduced:.2f}")
    if v.delta is not None:
        parts.append(f"Δ {v.delta:+.2f} pp")
    if v.tolerance is not None and v.tier in ("eval", "train"):
        parts.append(f"tolerance ±{v.tolerance:.2f} pp ({v.tolerance_id})")
    if v.detail:
        parts.append(v.detail)
    return "; ".join(parts)

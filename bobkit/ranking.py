"""z-scores, rankings and rank correlations: how BoB turns many tables into "which backbone to choose".

The paper (Goldblum et al., arXiv 2310.19909, the ranking behind Tables 2 and 3) standardises each
setting across backbones and combines the z-scores into an overall score; bobkit does not claim to
know its exact combination rule. bobkit's rule, stated in every ranking it prints (RANKING_RULE):

1. a *part* is one (recipe, dataset) of a setting; its values are z-scored across the backbones
   that have a value (population standard deviation; a part where all values are equal gives 0;
   the sign is flipped where lower is better);
2. a backbone's setting score is the mean of its parts' z-scores;
3. its task score is the mean of its setting scores over the settings of one task family
   (classification, detection, OOD classification, OOD detection, retrieval) it has;
4. its overall score is the mean of its task scores over the task families it has;
5. rank 1 is the highest score; equal scores share the better rank (1, 2, 2, 4).
Without task families (a plain cells table) every setting is its own group.

Plain Python; scipy is imported only for p-values (reports), never by `bobkit verify`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

RANKING_RULE = (
    "bobkit's rule (the paper's exact rule was not read): z-score each (recipe, dataset) across backbones "
    "(population SD, sign flipped where lower is better), average within a setting, then within a task family, "
    "then average the task scores a backbone has; rank 1 = highest, ties share the better rank"
)
TIE_DIGITS = 9


def zscores(values: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Standardise values across backbones: (v − mean) / SD with ddof=0, as scipy.stats.zscore.

    Plain Python, not numpy: a setting has at most a few dozen backbones, and importing numpy would
    cost `bobkit verify` a sixth of its one-second budget."""
    keys = [k for k, v in values.items() if v is not None and math.isfinite(v)]
    if not keys:
        return {}
    arr = [float(values[k]) for k in keys]
    mean = math.fsum(arr) / len(arr)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in arr) / len(arr))
    sign = 1.0 if higher_is_better else -1.0
    if sd == 0 or len(arr) < 2:
        return {k: 0.0 for k in keys}
    return {k: sign * (x - mean) / sd for k, x in zip(keys, arr)}


def competition_ranks(scores: Mapping[str, float]) -> dict[str, int]:
    """Rank 1 for the highest score; ties (equal to TIE_DIGITS decimals) share the better rank."""
    rounded = {k: round(v, TIE_DIGITS) for k, v in scores.items()}
    ordered = sorted(rounded.values(), reverse=True)
    first = {}
    for i, v in enumerate(ordered):
        first.setdefault(v, i + 1)
    return {k: first[v] for k, v in rounded.items()}


@dataclass(frozen=True)
class RankEntry:
    backbone: str
    score: float
    rank: int
    settings: dict[str, float] = field(default_factory=dict)
    groups: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """Backbones ordered by overall score, with each setting's and each task group's score and rank."""

    entries: list[RankEntry]
    setting_ranks: dict[str, dict[str, int]]
    group_ranks: dict[str, dict[str, int]] = field(default_factory=dict)
    rule: str = RANKING_RULE

    def order(self, name: str | None = None) -> dict[str, int]:
        """Ranks overall (None), of one setting, or of one task group."""
        if name is None or name == "overall":
            return {e.backbone: e.rank for e in self.entries}
        if name in self.setting_ranks:
            return dict(self.setting_ranks[name])
        return dict(self.group_ranks.get(name, {}))

    def top(self, k: int, name: str | None = None) -> list[str]:
        ranks = self.order(name)
        return sorted((b for b, r in ranks.items() if r <= k), key=lambda b: (ranks[b], b))

    def score(self, backbone: str, name: str | None = None) -> float | None:
        for e in self.entries:
            if e.backbone == backbone:
                if name is None or name == "overall":
                    return e.score
                return e.settings.get(name, e.groups.get(name))
        return None


def _mean_by_backbone(scores: Iterable[Mapping[str, float]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for one in scores:
        for b, z in one.items():
            sums.setdefault(b, []).append(z)
    return {b: sum(zs) / len(zs) for b, zs in sums.items()}


def rank_backbones(parts: Mapping[str, Mapping[str, Mapping[str, float]]], higher_is_better: Mapping[str, bool],
                   groups: Mapping[str, str] | None = None) -> Ranking:
    """parts: setting → part → backbone → value; groups: setting → task group. See RANKING_RULE."""
    setting_scores: dict[str, dict[str, float]] = {}
    for setting, by_part in parts.items():
        scores = _mean_by_backbone(zscores(values, higher_is_better.get(setting, True)) for values in by_part.values())
        if scores:
            setting_scores[setting] = scores
    groups = dict(groups or {})
    members: dict[str, list[str]] = {}
    for setting in setting_scores:
        members.setdefault(groups.get(setting, setting), []).append(setting)
    group_scores = {g: _mean_by_backbone(setting_scores[s] for s in ss) for g, ss in members.items()}
    overall = _mean_by_backbone(group_scores.values())
    ranks = competition_ranks(overall)
    entries = sorted(
        (RankEntry(b, overall[b], ranks[b], {s: v[b] for s, v in setting_scores.items() if b in v},
                   {g: v[b] for g, v in group_scores.items() if b in v}) for b in overall),
        key=lambda e: (e.rank, e.backbone),
    )
    grouped = {g: competition_ranks(v) for g, v in group_scores.items() if members[g] != [g]}
    return Ranking(entries, {s: competition_ranks(v) for s, v in setting_scores.items()}, grouped)


@dataclass(frozen=True)
class Correlation:
    what: str
    group: str
    n: int
    spearman: float | None
    pvalue: float | None


def average_ranks(values: Iterable[float]) -> list[float]:
    """Ranks 1..n, ties given the mean of the ranks they span (the convention Spearman's ρ needs)."""
    a = [float(v) for v in values]
    order = sorted(range(len(a)), key=a.__getitem__)
    ranks = [0.0] * len(a)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and a[order[j + 1]] == a[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman ρ (Pearson correlation of average ranks); None with < 3 pairs or a constant side.

    Plain Python, not scipy.stats or numpy: importing either costs a large part of the one second
    `bobkit verify` may take (benchmarks/verify_speed.py), and n is at most a few dozen backbones.
    Tests check it against scipy.
    """
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(xs) < 3 or min(xs) == max(xs) or min(ys) == max(ys):
        return None
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = math.fsum(rx) / len(rx), math.fsum(ry) / len(ry)
    dx, dy = [v - mx for v in rx], [v - my for v in ry]
    num = math.fsum(a * b for a, b in zip(dx, dy))
    den = math.sqrt(math.fsum(a * a for a in dx) * math.fsum(b * b for b in dy))
    return max(-1.0, min(1.0, num / den))


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def kendall(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Kendall τ-b (ties corrected, as scipy.stats.kendalltau's default); None with < 2 pairs or a constant side."""
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(xs) < 2 or min(xs) == max(xs) or min(ys) == max(ys):
        return None
    concordance = pairs = tied_x = tied_y = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            sx, sy = _sign(xs[i] - xs[j]), _sign(ys[i] - ys[j])
            concordance += sx * sy
            pairs += 1
            tied_x += sx == 0
            tied_y += sy == 0
    return concordance / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def spearman_pvalue(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Two-sided p-value of Spearman's ρ from scipy (reports only; slow to import)."""
    xs, ys = list(x), list(y)
    if spearman(xs, ys) is None:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).pvalue)


CNN_FAMILIES = ("resnet", "convnext", "clip_resnet")
VIT_FAMILIES = ("vit", "swinv2")


def backbone_groups(catalog, backbones: Iterable[str]) -> dict[str, list[str]]:
    """all / ViTs / CNNs, as the paper splits its correlations (Swin counted with the ViTs)."""
    groups: dict[str, list[str]] = {"all": [], "ViTs": [], "CNNs": []}
    for b in backbones:
        bb = catalog.backbones.get(b)
        if bb is None:
            continue
        groups["all"].append(b)
        if bb.family in VIT_FAMILIES:
            groups["ViTs"].append(b)
        elif bb.family in CNN_FAMILIES:
            groups["CNNs"].append(b)
    return groups


def size_correlations(catalog, ranking: Ranking, *, with_p: bool = False) -> list[Correlation]:
    """Spearman ρ of the overall z-score against parameter count and pretraining-set size, per group."""
    scores = {e.backbone: e.score for e in ranking.entries}
    out = []
    for group, members in backbone_groups(catalog, scores).items():
        for what, attr in (("z-score vs parameters", "params_m"), ("z-score vs pretraining images", "pretrain_images_m")):
            pairs = [(getattr(catalog.backbones[b], attr), scores[b]) for b in members
                     if getattr(catalog.backbones[b], attr) is not None]
            xs, ys = [a for a, _ in pairs], [s for _, s in pairs]
            rho = spearman(xs, ys)
            out.append(Correlation(what, group, len(pairs), rho, spearman_pvalue(xs, ys) if with_p else None))
    return out

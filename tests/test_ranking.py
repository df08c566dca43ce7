"""z-scores, competition ranks, Spearman/Kendall (checked against scipy) and the grouped ranking rule."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from bobkit.ranking import (
    average_ranks,
    competition_ranks,
    kendall,
    rank_backbones,
    size_correlations,
    spearman,
    zscores,
)
from tests.test_verify_catalog import BACKBONES, tiny_catalog


def test_zscores_match_scipy_and_flip_for_lower_is_better():
    values = {"a": 0.8, "b": 0.5, "c": 0.65, "d": 0.9}
    expected = stats.zscore(list(values.values()))
    assert list(zscores(values).values()) == pytest.approx(list(expected))
    assert list(zscores(values, higher_is_better=False).values()) == pytest.approx(list(-expected))


def test_zscores_of_equal_values_are_zero_and_nan_is_skipped():
    assert zscores({"a": 0.5, "b": 0.5}) == {"a": 0.0, "b": 0.0}
    assert zscores({"a": 0.5}) == {"a": 0.0}
    assert set(zscores({"a": 0.5, "b": float("nan"), "c": 0.7})) == {"a", "c"}


def test_competition_ranks_share_the_better_rank_on_ties():
    assert competition_ranks({"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}) == {"a": 1, "b": 2, "c": 2, "d": 4}
    # equal up to float noise is a tie
    assert competition_ranks({"a": 0.1 + 0.2, "b": 0.3}) == {"a": 1, "b": 1}


@pytest.mark.parametrize("seed", range(8))
def test_spearman_and_kendall_match_scipy_with_ties(seed):
    rng = random.Random(seed)
    n = rng.randint(4, 30)
    x = [rng.choice([1, 2, 3, 4, 5, 6]) for _ in range(n)]  # many ties
    y = [xi + rng.choice([-2, -1, 0, 1, 2]) for xi in x]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert list(average_ranks(x)) == pytest.approx(list(stats.rankdata(x)))


def test_correlations_undefined_for_constant_or_tiny_inputs():
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert kendall([1], [1]) is None
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_grouped_ranking_averages_settings_within_a_task_then_tasks():
    parts = {
        "s1": {"p": {"a": 1.0, "b": 2.0, "c": 3.0}},
        "s2": {"p": {"a": 3.0, "b": 2.0, "c": 1.0}},
        "s3": {"p": {"a": 1.0, "b": 1.5, "c": 3.5}},
    }
    higher = {"s1": True, "s2": True, "s3": True}
    flat = rank_backbones(parts, higher)
    grouped = rank_backbones(parts, higher, {"s1": "cls", "s2": "cls", "s3": "ret"})
    z = {s: dict(zip("abc", stats.zscore(list(parts[s]["p"].values())))) for s in parts}
    for b in "abc":
        assert flat.score(b) == pytest.approx((z["s1"][b] + z["s2"][b] + z["s3"][b]) / 3)
        assert grouped.score(b) == pytest.approx(((z["s1"][b] + z["s2"][b]) / 2 + z["s3"][b]) / 2)
        assert grouped.score(b, "cls") == pytest.approx((z["s1"][b] + z["s2"][b]) / 2)
    assert grouped.order("cls") == {"a": 1, "b": 1, "c": 1}  # s1 and s2 cancel: a three-way tie
    assert grouped.top(1) == ["c"]
    assert flat.group_ranks == {}


def test_backbone_missing_from_a_setting_is_averaged_over_what_it_has():
    parts = {"s1": {"p": {"a": 1.0, "b": 2.0}}, "s2": {"p": {"a": 2.0, "b": 1.0, "c": 5.0}}}
    r = rank_backbones(parts, {"s1": True, "s2": True})
    assert set(r.entries[0].settings) == {"s2"} and r.entries[0].backbone == "c"


def test_size_correlations_match_scipy(tmp_path):
    cat = tiny_catalog(tmp_path)
    parts = {"s": {"p": {"vit_s": 0.5, "vit_b": 0.7, "swin_t": 0.6, "cnx_b": 0.8, "rn50": 0.4}}}
    ranking = rank_backbones(parts, {"s": True})
    corr = {(c.what, c.group): c for c in size_correlations(cat, ranking, with_p=True)}
    names = list(BACKBONES)
    params = [BACKBONES[b][1] for b in names]
    scores = [ranking.score(b) for b in names]
    ref = stats.spearmanr(params, scores)
    c = corr[("z-score vs parameters", "all")]
    assert c.n == 5 and c.spearman == pytest.approx(ref.statistic) and c.pvalue == pytest.approx(ref.pvalue)
    vits = [b for b in names if BACKBONES[b][0] in ("vit", "swinv2")]
    assert corr[("z-score vs parameters", "ViTs")].spearman == pytest.approx(
        stats.spearmanr([BACKBONES[b][1] for b in vits], [ranking.score(b) for b in vits]).statistic)
    assert corr[("z-score vs parameters", "CNNs")].spearman is None  # two CNNs: undefined
    assert np.isfinite(corr[("z-score vs pretraining images", "all")].spearman)

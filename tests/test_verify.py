"""bobkit.verify on constructed result sets whose verdicts are known: inside, at and beyond each tolerance."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from bobkit.errors import BadInput
from bobkit.manifest.loader import load_catalog
from bobkit.verify import check_published, pick_tolerance, rounding_pp, to_junit, verify
from tests.test_verify_catalog import PUBLISHED_MRR, PUBLISHED_TOP1_PCT, record, tiny_catalog, write_tiny_manifests


@pytest.fixture()
def cat(tmp_path):
    return tiny_catalog(tmp_path)


def one(report, key: str):
    found = [v for v in report.verdicts if v.key == key]
    assert len(found) == 1, [v.key for v in report.verdicts]
    return found[0]


def mrr_rows(overrides: dict | None = None):
    values = {**PUBLISHED_MRR, **(overrides or {})}
    return [record(b, d, "retr", {"mrr": v}) for (b, d), v in values.items()]


def train_tolerance_pp(p: float, n: int = 400) -> float:
    return max(2 * 100 * math.sqrt(p * (1 - p) / n), 0.5)


# ------------------------------------------------------------------------------ train tier

@pytest.mark.parametrize("factor, status", [(0.0, "pass"), (0.5, "pass"), (1.0, "pass"), (1.5, "warn"),
                                            (2.0, "warn"), (2.5, "fail"), (-2.5, "fail")])
def test_train_tier_uses_two_standard_errors_of_the_eval_split(cat, factor, status):
    tol = train_tolerance_pp(0.60)  # ret_a has 400 query images: 2 × SE = 4.90 pp > floor 0.5
    rows = mrr_rows({("vit_b", "ret_a"): 0.60 + factor * tol / 100})
    v = one(verify(cat, rows), "retrieval/vit_b/ret_a/mrr")
    assert v.status == status
    assert v.tolerance == pytest.approx(tol)
    assert v.tolerance_id == "train-retrieval" and "n=400" in v.rule and "2×SE" in v.rule
    assert v.delta == pytest.approx(factor * tol, abs=1e-9)
    assert v.published == pytest.approx(60.0) and v.confidence == "primary" and v.source == "test table"


@pytest.mark.parametrize("delta_pp, status", [(0.5, "pass"), (0.9, "warn"), (1.0, "warn"), (1.1, "fail")])
def test_train_tier_falls_back_to_the_floor_without_a_split_size(cat, delta_pp, status):
    rows = mrr_rows({("cnx_b", "ret_b"): 0.45 + delta_pp / 100})
    v = one(verify(cat, rows), "retrieval/cnx_b/ret_b/mrr")
    assert v.status == status and v.tolerance == pytest.approx(0.5)
    assert "size unknown" in v.rule


# ------------------------------------------------------------------------------ eval tier

@pytest.mark.parametrize("delta_pp, status", [(0.0, "pass"), (0.1, "pass"), (-0.1, "pass"), (0.11, "fail")])
def test_eval_tier_is_tight_and_has_no_warn_band_here(cat, delta_pp, status):
    rows = [record(b, "cls_a", "ft", {"top1": (v + (delta_pp if b == "vit_b" else 0.0)) / 100}, experiment="rank",
                   lr=0.001) for b, v in PUBLISHED_TOP1_PCT.items()]
    v = one(verify(cat, rows, experiments=["rank"]), "rank/vit_b/cls_a/top1")
    assert v.status == status and v.tolerance == pytest.approx(0.1) and v.tier == "eval"
    assert "rounding 0.05 pp" in v.rule


def test_rounding_is_half_a_unit_of_the_last_digit_in_pp():
    assert rounding_pp(81.2, "percent") == pytest.approx(0.05)
    assert rounding_pp(0.666829, "fraction") == pytest.approx(5e-5)
    assert rounding_pp(0.7, "fraction") == pytest.approx(5.0)


# ------------------------------------------------------------------------------ missing and smoke

def test_no_results_means_every_cell_is_missing_and_the_fail_level_holds(cat):
    report = verify(cat, [])
    counts = report.counts()
    assert counts["pass"] == counts["fail"] == counts["warn"] == 0
    # 15 published cells, 1 published ranking, 4 orderings implied by published cells (ret_a, ret_b, overall, cls)
    assert counts["missing"] == 15 + 1 + 4
    assert report.holds("fail") and report.holds("warn") and not report.holds("missing")


def test_smoke_results_are_never_compared(cat):
    rows = [record(b, d, "retr", {"mrr": 0.01}, smoke=True) for (b, d) in PUBLISHED_MRR]
    report = verify(cat, rows, experiments=["retrieval"])
    cells = [v for v in report.verdicts if v.tier == "train"]
    assert {v.status for v in cells} == {"smoke"} and all(v.delta is None for v in cells)
    assert report.holds("warn") and any("smoke" in n for n in report.notes)


def test_real_run_wins_over_smoke_run(cat):
    rows = mrr_rows() + [record("vit_b", "ret_a", "retr", {"mrr": 0.0}, smoke=True, run_id="smoky")]
    assert one(verify(cat, rows), "retrieval/vit_b/ret_a/mrr").status == "pass"


def test_a_run_listed_by_two_experiments_counts_once_and_verify_agrees_with_the_table(cat):
    """A shared run appears once per experiment that lists it: verify and the table take the same cell."""
    from bobkit.tables import experiment_table

    shared = {**record("vit_b", "ret_a", "retr", {"mrr": 0.45}, run_id="shared1"), "experiment": "other"}
    rows = mrr_rows() + [shared]
    rows = [r for r in rows if not (r["backbone"] == "vit_b" and r["dataset"] == "ret_a")]
    rows += [shared, {**shared, "experiment": "retrieval"}]
    v = one(verify(cat, rows), "retrieval/vit_b/ret_a/mrr")
    cell = [c for (b, _), c in experiment_table(cat, "retrieval", rows).cells.items() if b == "vit_b"][0]
    assert cell.n_runs == 1 and cell.value == pytest.approx(0.45)
    assert v.reproduced == pytest.approx(45.0) and v.delta == pytest.approx(45.0 - v.published)
    assert v.detail == "1 run(s)"


def test_set_runs_are_shown_never_compared(cat):
    custom = [{**r, "user_set": {"lr": 0.1}, "run_id": r["run_id"] + "-set"} for r in mrr_rows({("vit_b", "ret_a"): 0.01})]
    report = verify(cat, custom, experiments=["retrieval"])
    cells = [v for v in report.verdicts if v.tier == "train"]
    assert {v.status for v in cells} == {"custom"} and all(v.delta is None for v in cells)
    assert any("--set values (lr=0.1)" in n for n in report.notes)
    # the paper's configuration wins where both exist
    assert one(verify(cat, mrr_rows() + custom), "retrieval/vit_b/ret_a/mrr").status == "pass"


def test_fail_on_levels(cat):
    rows = mrr_rows({("cnx_b", "ret_b"): 0.459})  # 0.9 pp off, floor 0.5, warn band to 1.0: warn
    report = verify(cat, rows, experiments=["retrieval"])
    assert report.counts()["warn"] == 1 and report.counts()["fail"] == 0
    assert report.holds("fail") and not report.holds("warn")
    with pytest.raises(BadInput):
        report.holds("sometimes")


def test_unknown_experiment_is_bad_input(cat):
    with pytest.raises(BadInput, match="unknown experiment"):
        verify(cat, [], experiments=["nope"])


# ------------------------------------------------------------------------------ rank tier

def rank_rows(order: list[str], ties: dict[str, str] | None = None) -> list[dict]:
    """Complete results for the 'rank' experiment where backbones score in `order` (best first)."""
    value = {b: 0.9 - 0.1 * i for i, b in enumerate(order)}
    for b, same_as in (ties or {}).items():
        value[b] = value[same_as]
    rows = [record(b, "cls_a", "ft", {"top1": value[b]}, experiment="rank", lr=0.001) for b in order]
    rows += [record(b, d, "retr", {"mrr": value[b] - 0.2}, experiment="rank") for b in order for d in ("ret_a", "ret_b")]
    return rows


def rank_verdict(cat, rows):
    return one(verify(cat, rows, experiments=["rank"]), "rank/(ranking)/overall/rank")


def test_rank_pass_when_order_and_top3_agree(cat):
    v = rank_verdict(cat, rank_rows(["cnx_b", "vit_b", "swin_t", "vit_s", "rn50"]))
    assert v.status == "pass" and v.stats["spearman"] == pytest.approx(1.0) and v.stats["kendall"] == pytest.approx(1.0)
    assert v.stats["published_top"] == v.stats["reproduced_top"] == ["cnx_b", "swin_t", "vit_b"]
    assert "ρ ≥ 0.9" in v.rule and v.tolerance_id == "rank"


def test_rank_warn_when_top3_agree_but_order_reversed(cat):
    v = rank_verdict(cat, rank_rows(["swin_t", "vit_b", "cnx_b", "vit_s", "rn50"]))
    assert v.status == "warn" and v.stats["spearman"] == pytest.approx(-1.0)


def test_rank_fail_when_neither_holds(cat):
    v = rank_verdict(cat, rank_rows(["vit_s", "rn50", "swin_t", "vit_b", "cnx_b"]))
    assert v.status == "fail" and v.stats["reproduced_top"] == ["rn50", "swin_t", "vit_s"]


def test_rank_ties_share_a_rank(cat):
    # vit_b and swin_t tie for 2nd: the top-3 set still agrees, ρ of (1,2,3) vs (1,2,2) is 0.866 < 0.9
    v = rank_verdict(cat, rank_rows(["cnx_b", "vit_b", "swin_t", "vit_s", "rn50"], ties={"swin_t": "vit_b"}))
    assert v.status == "warn" and v.stats["spearman"] == pytest.approx(math.sqrt(3) / 2)
    # vit_s ties swin_t for 3rd: four backbones in the top 3, so the sets differ
    v = rank_verdict(cat, rank_rows(["cnx_b", "vit_b", "swin_t", "vit_s", "rn50"], ties={"vit_s": "swin_t"}))
    assert v.status == "warn" and v.stats["reproduced_top"] == ["cnx_b", "swin_t", "vit_b", "vit_s"]


def test_incomplete_ranking_is_missing_not_judged(cat):
    rows = [r for r in rank_rows(["cnx_b", "vit_b", "swin_t", "vit_s", "rn50"]) if r["backbone"] != "rn50"
            or r["dataset"] != "ret_b"]
    v = rank_verdict(cat, rows)
    assert v.status == "missing" and "14 of 15" in v.detail


def test_cell_orderings_compare_the_published_values_order(cat):
    report = verify(cat, mrr_rows({("rn50", "ret_a"): 0.99}), experiments=["retrieval"])
    a = one(report, "retrieval/(ranking)/ret_a/mrr ordering")
    b = one(report, "retrieval/(ranking)/ret_b/mrr ordering")
    overall = one(report, "retrieval/(ranking)/overall/z-score ordering")
    assert b.status == "pass"
    assert a.status == "fail" and a.stats["spearman"] < 0.9
    assert overall.status in ("warn", "fail")


# ------------------------------------------------------------------------------ tolerances, published, junit

def test_most_specific_tolerance_wins(cat):
    assert pick_tolerance(cat, "train", "retrieval", "mrr").id == "train-retrieval"
    assert pick_tolerance(cat, "train", "classification", "top1").id == "train"


def test_missing_tolerance_is_a_clear_error(tmp_path):
    root = write_tiny_manifests(tmp_path / "m")
    (root / "tolerances.yaml").write_text("tolerances: []\n")
    cat = load_catalog(extra=[root], builtin=False)
    with pytest.raises(BadInput, match="no 'train' tolerance .* add one to a tolerances.yaml"):
        verify(cat, mrr_rows())


def test_published_tables_consistency(cat, tmp_path):
    assert check_published(cat).holds()
    root = write_tiny_manifests(tmp_path / "bad")
    (root / "published" / "bad.csv").write_text(
        "experiment,backbone,dataset,metric,value,unit,source,confidence\n"
        "retrieval,vit_s,ret_a,mrr,1.5,fraction,x,quoted\n"  # out of range
        "retrieval,alias-vit_b,ret_a,mrr,0.61,fraction,x,quoted\n"  # duplicate of vit_b/ret_a via alias
        "retrieval,vit_s,nowhere,mrr,0.5,fraction,x,quoted\n"  # unknown dataset
        "rank,vit_s,cls_a,top1,0.8,percent,x,quoted\n"  # a fraction in a percent column
        "rank,vit_s,overall,rank,1.5,rank,x,quoted\n")  # not a whole rank
    report = check_published(load_catalog(extra=[root], builtin=False))
    bad = {v.detail for v in report.verdicts if v.status == "fail"}
    assert not report.holds()
    text = " | ".join(sorted(bad))
    for needle in ("out of range [0, 1]", "duplicate key", "'nowhere' is not a dataset id", "looks like a fraction",
                   "not a whole number"):
        assert needle in text


def test_junit_has_one_testcase_per_verdict(cat):
    rows = mrr_rows({("cnx_b", "ret_b"): 0.459, ("vit_s", "ret_a"): 0.9})
    report = verify(cat, rows)
    root = ET.fromstring(to_junit(report, "warn"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.verdicts)
    counts = report.counts()
    assert len(root.findall(".//failure")) == counts["warn"] + counts["fail"] >= 2
    assert len(root.findall(".//skipped")) == counts["missing"] + counts["smoke"]
    strict = ET.fromstring(to_junit(report, "fail"))
    assert len(strict.findall(".//failure")) == counts["fail"]


# ------------------------------------------------------------------------------ the real manifests

def test_builtin_published_tables_are_consistent():
    cat = load_catalog()
    report = check_published(cat)
    assert report.verdicts and report.holds(), [v.detail for v in report.verdicts if v.status != "pass"]


def test_builtin_retrieval_reproduced_exactly_passes():
    cat = load_catalog()
    rows = [record(p.backbone, p.dataset, None, {p.metric: p.value}, experiment="retrieval")
            for p in cat.published if p.experiment == "retrieval" and p.unit == "fraction"]
    assert len(rows) >= 200
    report = verify(cat, rows, experiments=["retrieval"])
    assert report.counts()["pass"] == len(report.verdicts) and report.holds("missing")
    assert any(v.tier == "rank" and v.dataset == "overall" for v in report.verdicts)


def test_published_correlations_are_shown_next_to_reproduced_ones(tmp_path):
    from scipy import stats

    from bobkit.tables import experiment_table
    from tests.test_verify_catalog import BACKBONES

    root = write_tiny_manifests(tmp_path / "m")
    (root / "published" / "corr.csv").write_text(
        "experiment,backbone,dataset,metric,value,unit,source,confidence,tier\n"
        "rank,group:vit,zscore_vs_params,spearman_rho,0.58,rho,text,quoted,info\n"
        "rank,group:all,task_vs_task,spearman_rho_min,0.8,rho,text,quoted,info\n")
    cat = load_catalog(extra=[root], builtin=False)
    assert check_published(cat).holds()
    rows = rank_rows(["cnx_b", "swin_t", "vit_b", "vit_s", "rn50"])
    report = verify(cat, rows, experiments=["rank"])
    corr = one(report, "rank/group:vit/zscore_vs_params/spearman_rho")
    ranking = experiment_table(cat, "rank", rows).ranking
    vits = ["vit_s", "vit_b", "swin_t"]
    expected = stats.spearmanr([BACKBONES[b][1] for b in vits], [ranking.score(b) for b in vits]).statistic
    assert corr.status == "info" and corr.published == 0.58 and corr.reproduced == pytest.approx(expected)
    pairs = one(report, "rank/group:all/task_vs_task/spearman_rho_min")
    assert pairs.reproduced == pytest.approx(1.0) and "1 task pairs" in pairs.detail and pairs.status == "info"

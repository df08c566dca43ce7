"""experiment_table: cells per backbone × setting, best_lr/mean selection, smoke handling, rankings."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from bobkit.errors import BadInput
from bobkit.tables import experiment_table, render_rich, select_runs, to_json
from tests.test_verify_catalog import PUBLISHED_MRR, record, tiny_catalog


@pytest.fixture()
def cat(tmp_path):
    return tiny_catalog(tmp_path)


def test_cells_table_reads_one_value_per_backbone_and_setting(cat):
    rows = [record(b, d, "retr", {"mrr": v}) for (b, d), v in PUBLISHED_MRR.items()]
    t = experiment_table(cat, "retrieval", rows)
    assert t.kind == "cells" and t.ranking is None and not t.smoke
    assert t.cell("cnx_b", "ret_a").value == pytest.approx(0.70)
    assert t.cell("rn50", "ret_b").complete
    assert len(t.cells) == 10
    assert t.backbones == ["vit_s", "vit_b", "swin_t", "cnx_b", "rn50"]
    json.dumps(to_json(t))


def test_best_lr_means_seeds_then_picks_the_best_lr():
    rows = [record("a", "d", "r", {"top1": v}, lr=lr, seed=s)
            for lr, s, v in [(0.1, 0, 0.50), (0.1, 1, 0.70), (0.01, 0, 0.62), (0.01, 1, 0.62)]]
    sel = select_runs(rows, "top1", "best_lr")
    assert sel.lr == 0.01 and sel.value == pytest.approx(0.62) and sel.n_runs == 2
    worst = select_runs(rows, "top1", "best_lr", higher_is_better=False)
    assert worst.lr == 0.1 and worst.value == pytest.approx(0.60)  # lower is better: mean 0.60 < 0.62


def test_lower_is_better_picks_the_smaller_mean():
    rows = [record("a", "d", "r", {"err": v}, lr=lr) for lr, v in [(0.1, 0.3), (0.01, 0.2)]]
    assert select_runs(rows, "err", "best_lr", higher_is_better=False).lr == 0.01
    assert select_runs(rows, "err", "best_lr", higher_is_better=True).lr == 0.1


def test_mean_select_averages_every_run():
    rows = [record("a", "d", "r", {"top1": v}, lr=lr) for lr, v in [(0.1, 0.4), (0.01, 0.6)]]
    sel = select_runs(rows, "top1", "mean")
    assert sel.value == pytest.approx(0.5) and sel.n_runs == 2 and sel.lr is None


def test_real_runs_win_over_smoke_runs_and_smoke_is_flagged(cat):
    rows = [record("vit_s", "ret_a", "retr", {"mrr": 0.9}, smoke=True, run_id="s"),
            record("vit_s", "ret_a", "retr", {"mrr": 0.5}, run_id="r"),
            record("vit_b", "ret_a", "retr", {"mrr": 0.1}, smoke=True, run_id="s2")]
    t = experiment_table(cat, "retrieval", rows)
    assert t.cell("vit_s", "ret_a").value == 0.5 and not t.cell("vit_s", "ret_a").smoke
    assert t.cell("vit_b", "ret_a").smoke and t.smoke
    assert "SMOKE" in t.notes[0]


def test_missing_metric_and_nan_are_not_values(cat):
    rows = [record("vit_s", "ret_a", "retr", {"map": 0.5}), record("vit_b", "ret_a", "retr", {"mrr": float("nan")})]
    t = experiment_table(cat, "retrieval", rows)
    assert t.cells == {}


def test_aliases_map_to_backbone_ids(cat):
    t = experiment_table(cat, "retrieval", [record("alias-rn50", "ret_a", "retr", {"mrr": 0.4})])
    assert t.cell("rn50", "ret_a").value == 0.4


def test_ranking_table_matches_scipy_zscores(cat):
    top1 = {"vit_s": 0.80, "vit_b": 0.84, "swin_t": 0.82, "cnx_b": 0.86, "rn50": 0.785}
    rows = [record(b, "cls_a", "ft", {"top1": v}, experiment="rank", lr=0.001) for b, v in top1.items()]
    rows += [record(b, d, "retr", {"mrr": v}, experiment="rank") for (b, d), v in PUBLISHED_MRR.items()]
    t = experiment_table(cat, "rank", rows)
    assert t.ranking is not None
    names = list(top1)
    z_cls = stats.zscore([top1[b] for b in names])
    z_a = stats.zscore([PUBLISHED_MRR[(b, "ret_a")] for b in names])
    z_b = stats.zscore([PUBLISHED_MRR[(b, "ret_b")] for b in names])
    for i, b in enumerate(names):
        expected = (z_cls[i] + (z_a[i] + z_b[i]) / 2) / 2
        assert t.ranking.score(b) == pytest.approx(expected)
    assert t.ranking.entries[0].backbone == "cnx_b" and t.ranking.entries[0].rank == 1
    assert [e.rank for e in t.ranking.entries] == [1, 2, 3, 4, 5]
    assert t.ranking.top(3) == ["cnx_b", "vit_b", "swin_t"]
    render_rich(t)


def test_compact_table_keeps_only_small_backbones(cat):
    top1 = {"vit_s": 0.80, "vit_b": 0.84, "swin_t": 0.82, "cnx_b": 0.86, "rn50": 0.82}
    rows = [record(b, "cls_a", "ft", {"top1": v}, experiment="rank") for b, v in top1.items()]
    t = experiment_table(cat, "small", rows)
    assert set(t.backbones) == {"vit_s", "swin_t", "rn50"}
    # swin_t and rn50 tie: both rank 1, vit_s rank 3
    assert t.ranking.order() == {"swin_t": 1, "rn50": 1, "vit_s": 3}


def test_unknown_experiment_is_bad_input(cat):
    with pytest.raises(BadInput, match="unknown experiment 'nope'"):
        experiment_table(cat, "nope", [])


def test_rendered_tables_show_values_and_ranks(cat):
    from rich.console import Console

    rows = [record(b, d, "retr", {"mrr": v}) for (b, d), v in PUBLISHED_MRR.items() if (b, d) != ("rn50", "ret_b")]
    console = Console(record=True, width=200)
    console.print(render_rich(experiment_table(cat, "retrieval", rows)))
    text = console.export_text()
    assert "70.0" in text and "RetA" in text and "–" in text  # rn50/ret_b missing
    rows = [record(b, "cls_a", "ft", {"top1": v}, experiment="rank") for b, v in
            {"vit_s": 0.80, "vit_b": 0.84, "swin_t": 0.82, "cnx_b": 0.86, "rn50": 0.785}.items()]
    console = Console(record=True, width=200)
    console.print(render_rich(experiment_table(cat, "rank", rows)))
    text = console.export_text()
    assert "overall z" in text and "bobkit's rule" in text
    assert text.index("cnx_b") < text.index("vit_b") < text.index("swin_t")  # best first

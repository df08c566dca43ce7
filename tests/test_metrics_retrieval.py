"""Retrieval metrics: hand-made rankings (with junk), and an independent computation on random data."""

from __future__ import annotations

import numpy as np
import pytest

from bobkit.metrics import (
    QueryTruth,
    RetrievalScores,
    average_precision,
    evaluate_rankings,
    hits_precision_at_k,
    positions_in_ranking,
    precision_at_k,
    remove_junk,
    score_query,
)


def test_two_positives_no_junk_by_hand():
    # ranking 3 0 1 2 4; positives 0 and 2 sit at ranks 2 and 4 (1-based)
    s = score_query(np.array([3, 0, 1, 2, 4]), QueryTruth.of([0, 2]), ks=(1, 5))
    # trapezoids: (0/1 + 1/2)/2 and (1/3 + 2/4)/2, each over 2 positives
    assert s.ap == pytest.approx(((0 + 0.5) / 2 + (1 / 3 + 0.5) / 2) / 2)
    assert s.rr == pytest.approx(0.5)
    assert s.precision == pytest.approx((0.0, 0.5))  # P@5 divides by rank of the last positive (4)
    assert s.recall == pytest.approx((0.0, 1.0))


def test_step_ap_by_hand():
    pos = np.array([1, 3])
    assert average_precision(pos, 2, kind="step") == pytest.approx((1 / 2 + 2 / 4) / 2)
    with pytest.raises(ValueError):
        average_precision(pos, 2, kind="eleven_point")


def test_junk_is_skipped_by_ap_precision_recall_but_not_by_rr():
    # junk 5 and 0 are ranked first; the only positive (1) is then first among the rest
    ranking = np.array([5, 0, 1, 2, 3, 4])
    s = score_query(ranking, QueryTruth.of([1], junk=[5, 0]), ks=(1, 5))
    assert s.ap == pytest.approx(1.0)
    assert s.precision == pytest.approx((1.0, 1.0))
    assert s.recall == pytest.approx((1.0, 1.0))
    assert s.rr == pytest.approx(1 / 3)


def test_junk_between_positives():
    # ranking: P J N P -> without junk: P N P (ranks 1 and 3)
    ranking = np.array([0, 9, 4, 1, 2, 3, 5, 6, 7, 8])
    s = score_query(ranking, QueryTruth.of([0, 1], junk=[9]), ks=(1, 2, 3))
    assert s.ap == pytest.approx(((1 + 1) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    assert s.precision == pytest.approx((1.0, 0.5, 2 / 3))
    assert s.recall == pytest.approx((0.5, 0.5, 1.0))


def test_perfect_and_worst_rankings():
    best = score_query(np.arange(10), QueryTruth.of([0, 1, 2]), ks=(1, 5, 10))
    assert best.ap == pytest.approx(1.0) and best.rr == 1.0
    assert best.precision == pytest.approx((1.0, 1.0, 1.0))  # 3 of 3 before rank 5: divides by 3
    worst = score_query(np.arange(10), QueryTruth.of([9]), ks=(1, 5, 10))
    assert worst.rr == pytest.approx(0.1)
    assert worst.recall == pytest.approx((0.0, 0.0, 1.0))
    assert worst.precision == pytest.approx((0.0, 0.0, 0.1))


def test_precision_definitions_differ_only_when_all_positives_come_early():
    pos = np.array([0, 1])  # both positives at the top
    assert precision_at_k(pos, 10) == 1.0
    assert hits_precision_at_k(pos, 10) == pytest.approx(0.2)
    pos = np.array([0, 12])
    assert precision_at_k(pos, 10) == pytest.approx(hits_precision_at_k(pos, 10)) == pytest.approx(0.1)


def test_queries_without_positives_are_left_out_except_for_mrr():
    rankings = np.array([[0, 1, 2], [2, 1, 0]])
    truths = [QueryTruth.of([0]), QueryTruth.of([])]
    m = evaluate_rankings(rankings, truths, ks=(1,))
    assert m["map"] == pytest.approx(1.0)
    assert m["precision@1"] == pytest.approx(1.0)
    assert m["recall@1"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx(0.5)  # the empty query counts in MRR's denominator
    with pytest.raises(ValueError, match="no query has a positive"):
        evaluate_rankings(rankings[1:], truths[1:])


def test_truncated_ranking_loses_unreached_positives():
    s = score_query(np.array([4, 0]), QueryTruth.of([0, 7]), ks=(1, 2), database_size=10)
    assert s.ap == pytest.approx(((0 + 0.5) / 2) / 2)
    assert s.recall == pytest.approx((0.0, 0.5))
    s = score_query(np.array([4, 3]), QueryTruth.of([7]), ks=(1,), database_size=10)
    assert s.ap == 0.0 and s.rr == 0.0


def test_bad_ground_truth_index_is_named():
    with pytest.raises(ValueError, match="outside 0..4"):
        positions_in_ranking(np.arange(5), np.array([7]), database_size=5)


def _loop_trapezoid_ap(ranking, ok, junk):
    """Reference AP: walk the ranking item by item, skipping junk, adding one trapezoid per positive."""
    ok, junk = set(ok), set(junk)
    seen, hits, ap = 0, 0, 0.0
    for item in ranking:
        if item in junk:
            continue
        if item in ok:
            before = 1.0 if seen == 0 else hits / seen
            hits += 1
            seen += 1
            ap += (before + hits / seen) / 2 / len(ok)
        else:
            seen += 1
    return ap


@pytest.mark.parametrize("seed", range(20))
def test_against_independent_computations_on_random_data(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    scores = rng.standard_normal(n)
    labels = rng.random(n) < rng.uniform(0.02, 0.5)
    labels[rng.integers(n)] = True
    ranking = np.argsort(-scores, kind="stable")
    ok = np.flatnonzero(labels)

    raw = positions_in_ranking(ranking, ok)
    assert average_precision(raw, ok.size, kind="step") == pytest.approx(average_precision_score(labels, scores))

    junk = np.flatnonzero(~labels & (rng.random(n) < 0.1))
    clean = remove_junk(raw, positions_in_ranking(ranking, junk, n))
    assert average_precision(clean, ok.size) == pytest.approx(_loop_trapezoid_ap(ranking, ok, junk))

    # taking junk out of the ranking is the same as declaring it junk
    kept = ranking[~np.isin(ranking, junk)]
    s_junk = score_query(ranking, QueryTruth(ok, junk), ks=(1, 5, 10), database_size=n)
    s_drop = score_query(kept, QueryTruth(ok), ks=(1, 5, 10), database_size=n)
    assert s_junk.ap == pytest.approx(s_drop.ap)
    assert s_junk.precision == pytest.approx(s_drop.precision)
    assert s_junk.recall == pytest.approx(s_drop.recall)
    for i, k in enumerate((1, 5, 10)):
        assert s_drop.recall[i] == pytest.approx(labels[kept[:k]].sum() / ok.size)
    first = int(np.flatnonzero(labels[ranking])[0])
    assert s_junk.rr == pytest.approx(1.0 / (first + 1))


def test_accumulator_matches_one_shot_evaluation():
    rng = np.random.default_rng(7)
    rankings = np.stack([rng.permutation(50) for _ in range(12)])
    truths = [QueryTruth.of(rng.choice(50, size=int(rng.integers(1, 6)), replace=False)) for _ in range(12)]
    acc = RetrievalScores((1, 5, 10))
    for r, t in zip(rankings, truths):
        acc.add(r, t, 50)
    assert acc.summary() == pytest.approx(evaluate_rankings(rankings, truths, database_size=50))
    assert set(acc.summary()) == {"map", "mrr", "precision@1", "precision@5", "precision@10",
                                  "recall@1", "recall@5", "recall@10"}

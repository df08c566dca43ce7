"""Retrieval metrics with the BoB authors' definitions (revisitop-style AP with junk), in plain numpy.

Every function works on one query's ranking of the database (database indices, best first) and
that query's ground truth: `ok` (positives) and `junk` (images that count neither way).
docs/metrics.md writes the definitions down; the quirks kept on purpose (MRR counts junk,
precision@k divides by min(k, rank of the last positive)) are what the released numbers used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class QueryTruth:
    """Ground truth of one query: database indices of its positives and of its junk images."""

    ok: np.ndarray
    junk: np.ndarray = field(default_factory=lambda: EMPTY)

    @classmethod
    def of(cls, ok: Iterable[int], junk: Iterable[int] = ()) -> "QueryTruth":
        return cls(np.asarray(list(ok), dtype=np.int64), np.asarray(list(junk), dtype=np.int64))


def positions_in_ranking(ranking: np.ndarray, items: np.ndarray, database_size: int | None = None) -> np.ndarray:
    """Sorted 0-based positions of `items` in `ranking`; items the ranking does not reach are left out.

    A truncated ranking (top-k search) simply misses some items; a full ranking contains them all.
    """
    ranking = np.asarray(ranking, dtype=np.int64)
    n = int(database_size if database_size is not None else max(ranking.max(initial=-1), items.max(initial=-1)) + 1)
    items = np.asarray(items, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() >= n):
        raise ValueError(f"ground truth names a database index outside 0..{n - 1} "
                         f"(min {int(items.min())}, max {int(items.max())})")
    where = np.full(n, -1, dtype=np.int64)
    where[ranking] = np.arange(ranking.size)
    found = where[items]
    return np.sort(found[found >= 0])


def remove_junk(positive_positions: np.ndarray, junk_positions: np.ndarray) -> np.ndarray:
    """Positions of the positives after the junk images are taken out of the ranking."""
    if junk_positions.size == 0:
        return positive_positions
    junk_before = np.searchsorted(np.sort(junk_positions), positive_positions, side="left")
    return positive_positions - junk_before


def average_precision(positions: np.ndarray, n_positives: int, kind: str = "trapezoid") -> float:
    """AP from the 0-based sorted positions of the retrieved positives (junk already removed).

    kind="trapezoid": area under the precision-recall curve by trapezoids, precision just before
    and just at each positive (revisitop, the authors' choice). kind="step": mean precision at the
    positives (non-interpolated AP, as scikit-learn's average_precision_score).
    Positives missing from `positions` (beyond a truncated ranking) contribute nothing.
    """
    if n_positives <= 0:
        raise ValueError("average precision needs at least one positive")
    pos = np.asarray(positions, dtype=np.float64)
    j = np.arange(pos.size, dtype=np.float64)  # positives ranked above this one
    at = (j + 1.0) / (pos + 1.0)
    if kind == "step":
        return float(at.sum() / n_positives)
    if kind != "trapezoid":
        raise ValueError(f"unknown AP kind {kind!r}; use 'trapezoid' or 'step'")
    before = np.where(pos == 0, 1.0, j / np.maximum(pos, 1.0))
    return float(((before + at) / 2.0).sum() / n_positives)


def precision_at_k(positions: np.ndarray, k: int) -> float:
    """The authors' precision@k: positives within the first min(k, last positive's rank), over that count.

    Positions are 0-based with junk removed. It equals hits/k unless every positive is found
    before rank k, in which case it divides by the rank of the last positive instead of k.
    """
    if positions.size == 0:
        return 0.0
    ranks = positions + 1
    kq = min(int(ranks.max()), k)
    return float((ranks <= kq).sum() / kq)


def hits_precision_at_k(positions: np.ndarray, k: int) -> float:
    """Textbook precision@k: positives among the first k results, over k."""
    return float((np.asarray(positions) < k).sum() / k)


def recall_at_k(positions: np.ndarray, n_positives: int, k: int) -> float:
    """Fraction of the query's positives ranked within the first k (junk removed)."""
    return float((np.asarray(positions) < k).sum() / n_positives)


def reciprocal_rank(raw_positions: np.ndarray) -> float:
    """1 / rank of the first positive, junk images still counted (as the authors compute it); 0 if none found."""
    if raw_positions.size == 0:
        return 0.0
    return 1.0 / (float(raw_positions.min()) + 1.0)


@dataclass(frozen=True)
class QueryScores:
    ap: float
    rr: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]


def score_query(ranking: np.ndarray, truth: QueryTruth, ks: Sequence[int], database_size: int | None = None
                ) -> QueryScores | None:
    """All metrics of one query; None for a query without positives (left out of mAP, P@k and R@k)."""
    n_ok = int(truth.ok.size)
    if n_ok == 0:
        return None
    raw = positions_in_ranking(ranking, truth.ok, database_size)
    junk = positions_in_ranking(ranking, truth.junk, database_size)
    clean = remove_junk(raw, junk)
    return QueryScores(
        ap=average_precision(clean, n_ok),
        rr=reciprocal_rank(raw),
        precision=tuple(precision_at_k(clean, k) for k in ks),
        recall=tuple(recall_at_k(clean, n_ok, k) for k in ks),
    )


class RetrievalScores:
    """Accumulates per-query scores (so rankings can be produced chunk by chunk) and averages them.

    mAP, precision@k and recall@k average over queries that have positives; MRR divides by all
    queries (an empty query adds 0), as in the authors' evaluation.
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10)) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.per_query: list[QueryScores | None] = []

    def add(self, ranking: np.ndarray, truth: QueryTruth, database_size: int | None = None) -> None:
        self.per_query.append(score_query(ranking, truth, self.ks, database_size))

    def add_many(self, rankings: np.ndarray, truths: Sequence[QueryTruth], database_size: int | None = None) -> None:
        if len(rankings) != len(truths):
            raise ValueError(f"{len(rankings)} rankings but {len(truths)} ground-truth entries")
        for ranking, truth in zip(rankings, truths):
            self.add(ranking, truth, database_size)

    @property
    def n_queries(self) -> int:
        return len(self.per_query)

    @property
    def n_empty(self) -> int:
        return sum(1 for q in self.per_query if q is None)

    def summary(self) -> dict[str, float]:
        """{map, mrr, precision@k, recall@k} as fractions."""
        scored = [q for q in self.per_query if q is not None]
        if not scored:
            raise ValueError("no query has a positive in the database; the metrics are undefined")
        out = {
            "map": float(np.mean([q.ap for q in scored])),
            "mrr": float(sum(q.rr for q in scored) / len(self.per_query)),
        }
        for i, k in enumerate(self.ks):
            out[f"precision@{k}"] = float(np.mean([q.precision[i] for q in scored]))
        for i, k in enumerate(self.ks):
            out[f"recall@{k}"] = float(np.mean([q.recall[i] for q in scored]))
        return out


def evaluate_rankings(rankings: np.ndarray, truths: Sequence[QueryTruth], ks: Sequence[int] = (1, 5, 10),
                      database_size: int | None = None) -> dict[str, float]:
    """Metrics of a (queries × depth) matrix of database indices, best first."""
    scores = RetrievalScores(ks)
    scores.add_many(np.asarray(rankings), truths, database_size)
    return scores.summary()

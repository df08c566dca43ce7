"""Metrics as pure numpy functions (no torch), so they are tested on hand-made inputs.

docs/metrics.md gives the definitions.
"""

from bobkit.metrics.retrieval import (  # noqa: F401
    QueryTruth,
    RetrievalScores,
    average_precision,
    evaluate_rankings,
    hits_precision_at_k,
    positions_in_ranking,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    remove_junk,
    score_query,
)

"""Exact search: faiss gives the same neighbours and scores as numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from bobkit.search import InnerProductIndex, brute_force_search, faiss_available, l2_normalize

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed")


def _random(seed, n_db, n_q, dim):
    rng = np.random.default_rng(seed)
    return (l2_normalize(rng.standard_normal((n_q, dim))), l2_normalize(rng.standard_normal((n_db, dim))))


@needs_faiss
@pytest.mark.parametrize("n_db,n_q,dim,k", [(500, 40, 32, 10), (1000, 17, 64, 1000), (300, 5, 8, 1)])
def test_faiss_equals_brute_force(n_db, n_q, dim, k):
    q, db = _random(n_db + k, n_db, n_q, dim)
    index = InnerProductIndex(db, backend="faiss")
    assert index.backend == "faiss" and index.device == "cpu"
    f_scores, f_ids = index.search(q, k)
    b_scores, b_ids = brute_force_search(q, db, k)
    assert f_ids.shape == b_ids.shape == (n_q, min(k, n_db))
    np.testing.assert_array_equal(f_ids, b_ids)
    np.testing.assert_allclose(f_scores, b_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b_scores, np.take_along_axis(q @ db.T, b_ids, axis=1), rtol=1e-6)
    assert np.all(np.diff(f_scores, axis=1) <= 1e-6)


def test_numpy_backend_and_full_ranking_in_chunks():
    q, db = _random(3, 200, 23, 16)
    index = InnerProductIndex(db, backend="numpy")
    chunks = list(index.rank(q, chunk=5))
    assert [c[0] for c in chunks] == [0, 5, 10, 15, 20]
    ids = np.concatenate([c[2] for c in chunks])
    assert ids.shape == (23, 200)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ db.T), axis=1, kind="stable"))
    # every row is a permutation of the database
    assert all(np.array_equal(np.sort(r), np.arange(200)) for r in ids)


def test_automatic_chunk_size_respects_memory():
    q, db = _random(4, 100, 30, 8)
    starts = [s for s, _, _ in InnerProductIndex(db, backend="numpy").rank(q, memory_bytes=12 * 100 * 7)]
    assert starts == [0, 7, 14, 21, 28]


def test_brute_force_breaks_ties_by_index():
    db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    _, ids = brute_force_search(np.array([[1.0, 0.0]]), db, 3)
    assert ids.tolist() == [[0, 2, 3]]
    _, ids = brute_force_search(np.array([[1.0, 0.0]]), db, 4)
    assert ids.tolist() == [[0, 2, 3, 1]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="dimension"):
        InnerProductIndex(np.zeros((3, 4)), backend="numpy").search(np.zeros((1, 5)), 1)
    with pytest.raises(ValueError, match="backend"):
        InnerProductIndex(np.zeros((3, 4)), backend="annoy")
    with pytest.raises(ValueError, match="2-d"):
        brute_force_search(np.zeros(4), np.zeros((3, 4)), 1)

"""Exact inner-product nearest-neighbour search: faiss (GPU index when faiss sees GPUs), numpy otherwise.

Embeddings are L2-normalised upstream, so inner product is cosine similarity. Search is exact
(a flat index): retrieval metrics need the true ranking, not an approximation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

# faiss GPU flat search selects at most this many neighbours per query.
GPU_MAX_K = 2048


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_gpus() -> int:
    if not faiss_available():
        return 0
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _as_matrix(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array (n × dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} have dimension {x.shape[1]}, the database has {dim}")
    return x


def brute_force_search(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference search in numpy: top-k by inner product, ties broken by lower database index."""
    queries = _as_matrix(queries, "queries")
    database = _as_matrix(database, "database vectors", queries.shape[1])
    n = database.shape[0]
    k = min(int(k), n)
    scores = queries @ database.T
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        # lexsort: last key is primary; order by score descending, then by index ascending.
        order = np.lexsort((part, -part_scores), axis=1)
        ids = np.take_along_axis(part, order, axis=1)
    else:
        ids = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, ids, axis=1), ids.astype(np.int64)


class InnerProductIndex:
    """A flat (exact) inner-product index over database vectors.

    backend "auto" takes faiss when it is installed (its GPU index when faiss sees a GPU and
    k fits the GPU's selection limit), else numpy; "faiss" and "numpy" force one.
    """

    def __init__(self, database: np.ndarray, backend: str = "auto", use_gpu: bool | None = None) -> None:
        if backend not in ("auto", "faiss", "numpy"):
            raise ValueError(f"unknown search backend {backend!r}; use auto, faiss or numpy")
        self.database = _as_matrix(database, "database vectors")
        self.dim = self.database.shape[1]
        if backend == "auto":
            backend = "faiss" if faiss_available() else "numpy"
        if backend == "faiss" and not faiss_available():
            from bobkit.errors import EnvironmentMissing

            raise EnvironmentMissing("faiss is not installed; `pip install faiss-cpu` (or faiss-gpu) or use backend numpy")
        self.backend = backend
        self._cpu = None
        self._gpu = None
        if backend == "faiss":
            import faiss

            self._cpu = faiss.IndexFlatIP(self.dim)
            self._cpu.add(self.database)
            if use_gpu is None:
                use_gpu = faiss_gpus() > 0
            if use_gpu:
                if faiss_gpus() == 0:
                    from bobkit.errors import EnvironmentMissing

                    raise EnvironmentMissing("use_gpu asked for a faiss GPU index, but faiss sees no GPU; "
                                             "install faiss-gpu or leave use_gpu unset")
                self._resources = faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._resources, 0, self._cpu)

    @property
    def ntotal(self) -> int:
        return int(self.database.shape[0])

    @property
    def device(self) -> str:
        return "gpu" if self._gpu is not None else "cpu"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries × min(k, ntotal)), best first."""
        queries = _as_matrix(queries, "queries", self.dim)
        k = min(int(k), self.ntotal)
        if k <= 0:
            raise ValueError("k must be at least 1 and the database must not be empty")
        if self.backend == "numpy":
            return brute_force_search(queries, self.database, k)
        index = self._gpu if (self._gpu is not None and k <= GPU_MAX_K) else self._cpu
        scores, ids = index.search(queries, k)
        return scores, ids.astype(np.int64)

    def rank(self, queries: np.ndarray, depth: int | None = None, chunk: int | None = None,
             memory_bytes: int = 512 * 2**20) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Rankings of the database for chunks of queries: yields (first query index, scores, ids).

        depth None ranks the whole database (what the retrieval metrics need); chunk None picks
        as many queries per chunk as fit `memory_bytes` of scores and ids.
        """
        queries = _as_matrix(queries, "queries", self.dim)
        depth = self.ntotal if depth is None else min(depth, self.ntotal)
        if chunk is None:
            chunk = int(max(1, min(1024, memory_bytes // (12 * max(depth, 1)))))
        for start in range(0, queries.shape[0], chunk):
            scores, ids = self.search(queries[start:start + chunk], depth)
            yield start, scores, ids


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)

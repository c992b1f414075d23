"""The ``hnswlib`` index: an HNSW graph over the bank (approximate top-k; see ``moduseg_builtins.indexes``).

Contract, shared with ``exact``/``faiss`` (``_common``): float32 ``N×C`` vectors with
integer labels; ``search`` returns ``SearchResult`` with similarities descending and,
among equal similarities, the lower bank row first. What differs: the graph search is
approximate (``ef`` controls recall), so a true neighbour can be missed, and a group of
equal similarities that straddles the k-th place is not completed the way the exact
indexes complete it: which members of such a group come back depends on the graph.

Similarity = ``1 - distance``: hnswlib's ``ip`` distance is ``1 - <q, x>``; its
``cosine`` space normalises vectors on insertion and queries. The float32 round trip
costs about 1e-7 of precision.

When the graph cannot give k results (k near the bank size, tiny graphs) hnswlib raises;
the search then falls back to exact top-k over the stored vectors, says so once per index on
the ``moduseg`` logger (a warning on stderr unless logging is configured otherwise) and counts
it in ``exact_fallbacks`` (shown by ``repr``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import SearchResult
from moduseg_core.files.io import atomic_path

from ._common import (
    CountedIndex,
    _as_labels,
    _as_matrix,
    _check_k,
    _load_labels,
    _prepare_save,
    _read_manifest,
    _write_manifest,
    order_neighbours,
    topk_numpy,
)

INDEX_FILE = "index.hnsw"

log = logging.getLogger("moduseg.index.hnswlib")


def _threads(value: int) -> int:
    return -1 if value == 0 else int(value)


class HnswIndex(CountedIndex):
    """hnswlib ``Index`` in ``ip`` (default) or ``cosine`` space."""

    name = "hnswlib"

    def __init__(self, options: Any):
        import hnswlib

        self._hnswlib = hnswlib
        self.space = options.space
        self.ef = options.ef
        self.M = options.M
        self.ef_construction = options.ef_construction
        self.seed = options.seed
        self.threads = _threads(options.threads)
        self.build_threads = _threads(options.build_threads)
        self._index: Any = None  # created on the first add/load, when the dim is known
        self._labels: list[np.ndarray] = []
        self._count = 0
        self._dim: int | None = None
        self.exact_fallbacks = 0  # searches answered by brute force (k too large for the graph)

    def __repr__(self) -> str:
        return (
            f"HnswIndex(count={self._count}, dim={self._dim}, space={self.space!r}, M={self.M}, "
            f"ef_construction={self.ef_construction}, ef={self.ef}, exact_fallbacks={self.exact_fallbacks})"
        )

    @property
    def labels(self) -> np.ndarray:
        if len(self._labels) != 1:
            self._labels = [np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)]
        return self._labels[0]

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        matrix = _as_matrix(self.name, "vectors", vectors, self._dim)
        ids = _as_labels(self.name, labels, matrix.shape[0])
        n = int(matrix.shape[0])
        if self._index is None:
            self._dim = int(matrix.shape[1])
            self._index = self._hnswlib.Index(space=self.space, dim=self._dim)
            self._index.init_index(
                max_elements=max(n, 1), M=self.M, ef_construction=self.ef_construction, random_seed=self.seed
            )
        if not n:
            return
        capacity = self._index.get_max_elements()
        if self._count + n > capacity:
            self._index.resize_index(max(self._count + n, 2 * capacity))
        rows = np.arange(self._count, self._count + n, dtype=np.int64)
        self._index.add_items(matrix, rows, num_threads=self.build_threads)
        self._labels.append(ids)
        self._count += n

    def _vectors(self) -> np.ndarray:
        """Every stored vector in bank-row order (as hnswlib keeps them: normalised in cosine space)."""
        return np.asarray(self._index.get_items(np.arange(self._count), return_type="numpy"), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        k = _check_k(self.name, k, self._count)
        queries = _as_matrix(self.name, "queries", queries, self._dim)
        if not queries.shape[0]:
            return SearchResult(np.zeros((0, k), np.float32), np.zeros((0, k), np.int32))
        self._index.set_ef(max(self.ef, k))
        try:
            rows, distances = self._index.knn_query(queries, k=k, num_threads=self.threads)
        except RuntimeError as exc:  # the graph could not return k results (k close to the bank size)
            if not self.exact_fallbacks:
                log.warning(
                    "index 'hnswlib': the graph could not return k=%d neighbours of %d vectors (%s); searching "
                    "exactly (brute force) instead for such queries", k, self._count, " ".join(str(exc).split())[:120],
                )
            self.exact_fallbacks += 1
            q = queries
            if self.space == "cosine":
                norms = np.linalg.norm(q, axis=1, keepdims=True)
                q = q / np.where(norms > 0, norms, 1)
            sims, rows = topk_numpy(q @ self._vectors().T, k)
        else:
            sims = (1.0 - distances).astype(np.float32)
            rows = rows.astype(np.int64)
            sims, rows = order_neighbours(sims, rows)
        return SearchResult(sims.astype(np.float32, copy=False), self.labels[rows].astype(np.int32), rows)

    def save(self, directory: Path | str) -> None:
        target = _prepare_save(self.name, directory)
        extra = {"space": self.space, "M": self.M, "ef_construction": self.ef_construction}
        with atomic_path(target) as tmp:
            tmp.mkdir()
            if self._index is not None:
                self._index.save_index(str(tmp / INDEX_FILE))
            np.save(tmp / "labels.npy", self.labels)
            _write_manifest(tmp, self.name, self._count, self._dim, extra)

    def load(self, directory: Path | str) -> None:
        directory, manifest = _read_manifest(self.name, directory)
        count, dim = manifest["count"], manifest["dim"]
        space = manifest.get("space")
        if space not in ("ip", "cosine"):
            raise ModusegError(
                f"{directory / 'index.json'} has space {space!r}; an hnswlib index directory names 'ip' or 'cosine': "
                "save the index again"
            )
        labels = _load_labels(directory, count)
        index = None
        if dim is not None:
            path = directory / INDEX_FILE
            if not path.is_file() or os.path.getsize(path) == 0:
                raise ModusegError(f"index file {path} is missing or empty; save the index again")
            index = self._hnswlib.Index(space=space, dim=dim)
            try:
                index.load_index(str(path), max_elements=max(count, 1))
            except (RuntimeError, ValueError, MemoryError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModusegError(f"index file {path} is corrupt ({first}); save the index again") from exc
            if index.get_current_count() != count:
                raise ModusegError(
                    f"index file {path} holds {index.get_current_count()} vectors but index.json says {count}; "
                    "save the index again"
                )
            self.M = int(manifest.get("M", self.M))
            self.ef_construction = int(manifest.get("ef_construction", self.ef_construction))
        self.space = space
        self._index = index
        self._labels = [labels]
        self._count = int(count)
        self._dim = dim

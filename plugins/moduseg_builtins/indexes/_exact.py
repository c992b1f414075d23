"""The ``exact`` index: brute-force inner-product top-k, numpy on the CPU or torch on a CUDA GPU.

``exact`` and ``faiss`` (flat) return the same neighbours in the same order: similarity
descending, ties broken by insertion order (the lower bank row first), also when a group of
equal similarities straddles the k-th place. Only numpy is imported here; torch is imported
when ``device`` resolves to a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import SearchResult
from moduseg_core.files.io import atomic_path

from .._shared import resolve_gpu_choice
from ._common import (
    CountedIndex,
    _as_labels,
    _as_matrix,
    _block_size,
    _check_k,
    _load_labels,
    _prepare_save,
    _read_manifest,
    _resolve_row,
    _write_manifest,
    order_neighbours,
    topk_numpy,
)


class ExactIndex(CountedIndex):
    """Brute-force inner product: numpy on the CPU, or torch on a CUDA GPU."""

    name = "exact"

    def __init__(self, options: Any):
        self.device = options.device
        self.chunk = options.chunk
        self._parts: list[np.ndarray] = []
        self._label_parts: list[np.ndarray] = []
        self._count = 0
        self._dim: int | None = None
        self._backend: str | None = None  # "numpy" or a torch device string, chosen on first search
        self._bank_tensor: Any = None

    def __repr__(self) -> str:
        return f"ExactIndex(count={self._count}, dim={self._dim}, device={self.device!r})"

    # storage: parts are concatenated lazily so repeated adds stay linear
    @property
    def vectors(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts else np.zeros((0, self._dim or 0), np.float32)]
        return self._parts[0]

    @property
    def labels(self) -> np.ndarray:
        if len(self._label_parts) != 1:
            self._label_parts = [np.concatenate(self._label_parts) if self._label_parts else np.zeros(0, np.int32)]
        return self._label_parts[0]

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        matrix = _as_matrix(self.name, "vectors", vectors, self._dim)
        ids = _as_labels(self.name, labels, matrix.shape[0])
        if self._dim is None:
            self._dim = int(matrix.shape[1])
        if matrix.shape[0]:
            self._parts.append(matrix.copy() if matrix is vectors else matrix)
            self._label_parts.append(ids)
            self._count += int(matrix.shape[0])
            self._bank_tensor = None

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        k = _check_k(self.name, k, self._count)
        queries = _as_matrix(self.name, "queries", queries, self._dim)
        q = queries.shape[0]
        sims = np.empty((q, k), np.float32)
        rows = np.empty((q, k), np.int64)
        if q:
            backend = self._resolve_backend()
            step = _block_size(self.chunk, self._count)
            search_block = self._search_numpy if backend == "numpy" else self._search_torch
            for start in range(0, q, step):
                stop = min(start + step, q)
                sims[start:stop], rows[start:stop] = search_block(queries[start:stop], k)
        return SearchResult(sims, self.labels[rows].astype(np.int32), rows)

    def _search_numpy(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk_numpy(queries @ self.vectors.T, k)

    def _search_torch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._bank_tensor is None:
            self._bank_tensor = torch.from_numpy(self.vectors).to(self._backend)
        bank = self._bank_tensor
        scores = torch.from_numpy(queries).to(bank.device) @ bank.T
        values, rows = torch.topk(scores, k, dim=1, largest=True, sorted=False)
        threshold = values.min(dim=1).values
        at_least = (scores >= threshold[:, None]).sum(dim=1)
        sims, rows = values.cpu().numpy(), rows.cpu().numpy()
        redo = torch.nonzero(at_least > k).flatten().cpu().numpy()
        if len(redo):  # a tie group straddles the k-th place: lower bank rows win, as in numpy
            for r in redo:
                row_scores = scores[int(r)].cpu().numpy()
                rows[r] = _resolve_row(row_scores, sims[r].min(), k)
                sims[r] = row_scores[rows[r]]
        return order_neighbours(sims, rows)

    def _resolve_backend(self) -> str:
        if self._backend is None:
            self._backend = resolve_gpu_choice(self.device, "index 'exact'") or "numpy"
        return self._backend

    @property
    def backend(self) -> str:
        """Where searches run: 'numpy' or a torch CUDA device (resolved on first use)."""
        return self._resolve_backend()

    def save(self, directory: Path | str) -> None:
        target = _prepare_save(self.name, directory)
        with atomic_path(target) as tmp:
            tmp.mkdir()
            np.save(tmp / "vectors.npy", self.vectors)
            np.save(tmp / "labels.npy", self.labels)
            _write_manifest(tmp, self.name, self._count, self._dim)

    def load(self, directory: Path | str) -> None:
        directory, manifest = _read_manifest(self.name, directory)
        count, dim = manifest["count"], manifest["dim"]
        path = directory / "vectors.npy"
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModusegError(f"index file {path} is missing or corrupt ({exc}); save the index again") from exc
        if vectors.dtype != np.float32 or vectors.shape != (count, dim if dim is not None else 0):
            raise ModusegError(
                f"index file {path} holds {vectors.dtype} {vectors.shape} but index.json says "
                f"float32 ({count}, {dim}); save the index again"
            )
        labels = _load_labels(directory, count)
        self._parts = [np.ascontiguousarray(vectors)]
        self._label_parts = [labels]
        self._count = int(count)
        self._dim = dim
        self._bank_tensor = None

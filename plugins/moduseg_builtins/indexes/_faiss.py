"""The ``faiss`` index: ``IndexFlatIP`` (exact) or ``IndexIVFFlat`` (approximate), on a GPU when faiss has one.

With ``type='flat'`` it returns what ``exact`` returns (same neighbours, same order). With
``type='ivf'`` it searches only ``nprobe`` k-means cells: among the neighbours it finds the order
is the same, but a true neighbour in an unsearched cell is missed. faiss is imported when the
index is built.
"""

from __future__ import annotations

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
)

#: faiss GPU indexes answer at most this many neighbours per query (and probe at most this many cells).
_FAISS_GPU_MAX_K = 2048


def auto_nlist(n: int) -> int:
    """4·sqrt(n) cells, but at least 39 training vectors per cell (faiss's k-means guideline)."""
    return max(1, min(int(round(4 * np.sqrt(n))), n // 39))


class FaissIndex(CountedIndex):
    """faiss ``IndexFlatIP`` (exact) or ``IndexIVFFlat`` (approximate), on a GPU when faiss has one.

    An IVF index is trained (k-means over the vectors, inner-product metric) on everything
    added before it is first searched or saved; later adds go into the trained cells.
    """

    name = "faiss"

    def __init__(self, options: Any):
        import faiss

        self._faiss = faiss
        self.gpu_option = options.gpu
        self.kind = getattr(options, "type", "flat")
        self.nlist_option = getattr(options, "nlist", None)
        self.nprobe = getattr(options, "nprobe", 32)
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if options.gpu == "always" and gpus == 0:
            raise ModusegError(
                "index 'faiss' option gpu='always' but faiss sees no GPU (faiss.get_num_gpus() == 0); "
                "install a GPU build of faiss, or use gpu='auto' or gpu='never'"
            )
        self.use_gpu = options.gpu != "never" and gpus > 0
        self._resources: Any = None
        self._index: Any = None  # created on the first add/load, when the dim is known (IVF: when trained)
        self._cpu_copy: Any = None  # for searches wider than a GPU index allows, and for saving
        self._pending: list[np.ndarray] = []  # IVF: vectors waiting for training
        self.nlist: int | None = None  # IVF: the trained number of cells
        self._labels: list[np.ndarray] = []
        self._count = 0
        self._dim: int | None = None

    def __repr__(self) -> str:
        ivf = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind == "ivf" else ""
        return f"FaissIndex(type={self.kind!r}, count={self._count}, dim={self._dim}{ivf}, gpu={self.use_gpu})"

    @property
    def labels(self) -> np.ndarray:
        if len(self._labels) != 1:
            self._labels = [np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)]
        return self._labels[0]

    def _to_device(self, cpu_index: Any) -> Any:
        if not self.use_gpu:
            return cpu_index
        if self._resources is None:
            self._resources = self._faiss.StandardGpuResources()
        return self._faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)

    def _cpu_index(self) -> Any:
        if not self.use_gpu:
            return self._index
        if self._cpu_copy is None:
            self._cpu_copy = self._faiss.index_gpu_to_cpu(self._index)
            self._set_nprobe(self._cpu_copy, self.nprobe)
        return self._cpu_copy

    def _set_nprobe(self, index: Any, nprobe: int) -> None:
        if self.kind != "ivf" or index is None:
            return
        nprobe = max(1, min(int(nprobe), self.nlist or 1))
        if self.use_gpu and index is self._index:  # a GpuIndexIVFFlat: faiss's generic parameter setter
            self._faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", min(nprobe, _FAISS_GPU_MAX_K))
        else:
            index.nprobe = nprobe

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        matrix = _as_matrix(self.name, "vectors", vectors, self._dim)
        ids = _as_labels(self.name, labels, matrix.shape[0])
        if self._dim is None:
            self._dim = int(matrix.shape[1])
            if self.kind == "flat":
                self._index = self._to_device(self._faiss.IndexFlatIP(self._dim))
        if not matrix.shape[0]:
            return
        if self._index is None:  # an IVF index not trained yet
            self._pending.append(matrix.copy() if matrix is vectors else matrix)
        else:
            self._index.add(matrix)
            self._cpu_copy = None
        self._labels.append(ids)
        self._count += int(matrix.shape[0])

    def _train(self) -> None:
        """IVF: k-means over the pending vectors, then add them (no-op once trained)."""
        if self._index is not None or not self._pending:
            return
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n = int(data.shape[0])
        nlist = self.nlist_option or auto_nlist(n)
        if nlist > n:
            raise ModusegError(
                f"index 'faiss' type='ivf' with nlist={nlist} needs at least {nlist} vectors to train, but "
                f"{n} were added; lower index.nlist (None = automatic) or use type='flat'"
            )
        quantizer = self._faiss.IndexFlatIP(self._dim)
        cpu_index = self._faiss.IndexIVFFlat(quantizer, self._dim, nlist, self._faiss.METRIC_INNER_PRODUCT)
        cpu_index.train(data)
        cpu_index.add(data)
        self._quantizer = quantizer  # the IVF index does not own it in Python
        self.nlist = nlist
        self._index = self._to_device(cpu_index)
        self._cpu_copy = None
        self._set_nprobe(self._index, self.nprobe)
        self._pending = []

    def _raw_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index if not self.use_gpu or k <= _FAISS_GPU_MAX_K else self._cpu_index()
        sims, rows = index.search(queries, k)
        sims, rows = sims.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
        if self.kind == "ivf":
            short = np.flatnonzero((rows < 0).any(axis=1))
            if len(short):  # the probed cells held fewer than k vectors: search every cell for those queries
                self._set_nprobe(index, self.nlist or 1)
                try:
                    sims[short], rows[short] = index.search(queries[short], k)
                finally:
                    self._set_nprobe(index, self.nprobe)
        return sims, rows

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        k = _check_k(self.name, k, self._count)
        queries = _as_matrix(self.name, "queries", queries, self._dim)
        if not queries.shape[0]:
            return SearchResult(np.zeros((0, k), np.float32), np.zeros((0, k), np.int32))
        self._train()
        n = self._count
        wide = min(k + 1, n)  # one extra neighbour shows whether a tie group straddles the k-th place
        sims, rows = self._raw_search(queries, wide)
        if wide > k:
            straddle = np.flatnonzero(sims[:, k] == sims[:, k - 1])
            sims, rows = sims[:, :k].copy(), rows[:, :k].copy()
            if len(straddle):
                sims[straddle], rows[straddle] = self._resolve_ties(queries[straddle], k)
        sims, rows = order_neighbours(sims, rows)
        return SearchResult(sims, self.labels[rows].astype(np.int32), rows)

    def _resolve_ties(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Widen the search until each tie group at the k-th place is whole, then keep its lowest rows."""
        n = self._count
        out_sims = np.empty((len(queries), k), np.float32)
        out_rows = np.empty((len(queries), k), np.int64)
        pending = np.arange(len(queries))
        wide = min(n, 2 * (k + 1))
        while len(pending):
            sims, rows = self._raw_search(queries[pending], wide)
            threshold = sims[:, k - 1]
            done = (sims[:, -1] < threshold) | (wide == n)
            for i in np.flatnonzero(done):
                keep = sims[i] > threshold[i]
                tied = np.sort(rows[i][sims[i] == threshold[i]])[: k - int(keep.sum())]
                chosen_rows = np.concatenate([rows[i][keep], tied])
                chosen_sims = np.concatenate([sims[i][keep], np.full(len(tied), threshold[i], np.float32)])
                out_rows[pending[i]], out_sims[pending[i]] = chosen_rows, chosen_sims
            pending = pending[~done]
            wide = min(n, 2 * wide)
        return out_sims, out_rows

    def save(self, directory: Path | str) -> None:
        target = _prepare_save(self.name, directory)
        self._train()
        extra = {"type": "ivf", "nlist": self.nlist} if self.kind == "ivf" else None
        with atomic_path(target) as tmp:
            tmp.mkdir()
            if self._index is not None:
                self._faiss.write_index(self._cpu_index(), str(tmp / "index.faiss"))
            np.save(tmp / "labels.npy", self.labels)
            _write_manifest(tmp, self.name, self._count, self._dim, extra)

    def load(self, directory: Path | str) -> None:
        directory, manifest = _read_manifest(self.name, directory)
        count, dim = manifest["count"], manifest["dim"]
        saved_kind = manifest.get("type", "flat")
        if saved_kind not in ("flat", "ivf"):
            raise ModusegError(
                f"{directory / 'index.json'} names an unknown faiss type {saved_kind!r}; save the index again"
            )
        if saved_kind != self.kind:
            raise ModusegError(
                f"{directory} holds a faiss type={saved_kind!r} index but this index has type={self.kind!r}; "
                f"set index.type={saved_kind} to load it, or re-add the vectors to a type={self.kind!r} index"
            )
        labels = _load_labels(directory, count)
        path = directory / "index.faiss"
        expected = self._faiss.IndexIVFFlat if saved_kind == "ivf" else self._faiss.IndexFlat
        if dim is None:
            cpu_index = None
        else:
            try:
                cpu_index = self._faiss.read_index(str(path))
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModusegError(f"index file {path} is missing or corrupt ({first}); save the index again") from exc
            if (
                cpu_index.ntotal != count
                or cpu_index.d != dim
                or cpu_index.metric_type != self._faiss.METRIC_INNER_PRODUCT
                or not isinstance(cpu_index, expected)
            ):
                raise ModusegError(
                    f"index file {path} holds a {type(cpu_index).__name__} of {cpu_index.ntotal}×{cpu_index.d} "
                    f"but index.json says an inner-product {expected.__name__} of {count}×{dim}; save the index again"
                )
        self.nlist = int(cpu_index.nlist) if cpu_index is not None and saved_kind == "ivf" else None
        self._pending = []
        self._index = None if cpu_index is None else self._to_device(cpu_index)
        self._cpu_copy = cpu_index if self.use_gpu else None
        self._set_nprobe(self._index, self.nprobe)
        self._set_nprobe(self._cpu_copy, self.nprobe)
        self._labels = [labels]
        self._count = int(count)
        self._dim = dim

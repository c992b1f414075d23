"""Implementations behind the ``exact`` and ``faiss`` indexes (see ``indexes.py``).

Only numpy is imported here; torch and faiss are imported inside the methods that
use them. ``exact`` and ``faiss`` (flat) return the same neighbours in the same order:
similarity descending, ties broken by insertion order (the lower bank row first), also
when a group of equal similarities straddles the k-th place. ``faiss`` with
``type='ivf'`` searches only ``nprobe`` k-means cells: among the neighbours it finds the
order is the same, but a true neighbour in an unsearched cell is missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.errors import ModusegError
from moduseg_core.io import atomic_path
from moduseg_core.types import SearchResult

from ._devices import resolve_gpu_choice

FORMAT = 1
METRIC = "inner_product"
_INT32_MAX = int(np.iinfo(np.int32).max)

#: A search block holds at most this many similarities (about 128 MiB of float32,
#: plus the top-k bookkeeping), whatever ``chunk`` says, so huge banks stay in memory.
_BLOCK_ELEMENTS = 1 << 25


# -- input checks shared by both indexes ------------------------------------------


def _as_matrix(index: str, what: str, array: Any, dim: int | None) -> np.ndarray:
    """``array`` → C-contiguous float32 ``N×C``, checked for shape, dim and finiteness."""
    try:
        matrix = np.asarray(array)
    except Exception as exc:  # ragged lists and the like
        raise ModusegError(
            f"index {index!r}: {what} are not an array ({exc}); pass a float32 N×C numpy array"
        ) from exc
    if matrix.dtype.kind not in "fiu" or matrix.dtype == np.bool_:
        raise ModusegError(
            f"index {index!r}: {what} have dtype {matrix.dtype}; they must be floating point (float32 N×C)"
        )
    if matrix.ndim != 2:
        hint = "; pass one vector as vector[None]" if matrix.ndim == 1 else ""
        raise ModusegError(
            f"index {index!r}: {what} have shape {matrix.shape}; they must be a 2-D N×C array{hint}"
        )
    if matrix.shape[1] == 0:
        raise ModusegError(f"index {index!r}: {what} have shape {matrix.shape} (0 dims); vectors need at least one dim")
    if dim is not None and matrix.shape[1] != dim:
        raise ModusegError(
            f"index {index!r}: {what} have {matrix.shape[1]} dims but the index holds {dim}-dim vectors; "
            "use the same encoder (and options) as the bank, or build a new index"
        )
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ModusegError(
            f"index {index!r}: {what} contain {int((~finite).sum())} non-finite values (NaN/inf), first in row {row}; "
            "vectors must be finite: drop empty masks before pooling and check the encoder output"
        )
    return matrix


def _as_labels(index: str, labels: Any, count: int) -> np.ndarray:
    """``labels`` → int32 N of non-negative class ids."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != count:
        raise ModusegError(
            f"index {index!r}: labels have shape {array.shape} but there are {count} vectors; "
            f"pass one integer label per vector (shape ({count},))"
        )
    if count and (array.dtype.kind not in "iu" or array.dtype == np.bool_):
        raise ModusegError(
            f"index {index!r}: labels have dtype {array.dtype}; labels must be integer class ids "
            "(convert with labels.astype(int) if they are whole numbers)"
        )
    if count:
        low, high = int(array.min()), int(array.max())
        if low < 0:
            row = int(np.flatnonzero(array < 0)[0])
            raise ModusegError(
                f"index {index!r}: label {int(array[row])} in row {row} is negative; "
                "labels must be non-negative class ids (drop ignored regions before adding)"
            )
        if high > _INT32_MAX:
            raise ModusegError(
                f"index {index!r}: label {high} does not fit in int32; labels must be class ids 0..{_INT32_MAX}"
            )
    return array.astype(np.int32)


def _check_k(index: str, k: Any, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ModusegError(f"index {index!r}: k={k!r} is not an integer; pass k as an int between 1 and {max(size, 1)}")
    k = int(k)
    if size == 0:
        raise ModusegError(f"index {index!r} is empty; add vectors (or load a saved index) before searching")
    if not 1 <= k <= size:
        raise ModusegError(
            f"index {index!r}: k={k} is out of range; k must be between 1 and the index size {size} "
            "(cap it with k=min(k, len(index)))"
        )
    return k


# -- top-k with deterministic ties ------------------------------------------------


def order_neighbours(sims: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of a top-k selection by similarity descending, then bank row ascending."""
    order = np.lexsort((rows, -sims), axis=-1)
    return np.take_along_axis(sims, order, axis=-1), np.take_along_axis(rows, order, axis=-1)


def _resolve_row(scores: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """The k best rows of one score vector: all above ``threshold``, then the lowest rows equal to it."""
    above = np.flatnonzero(scores > threshold)
    equal = np.flatnonzero(scores == threshold)[: k - len(above)]
    return np.concatenate([above, equal])


#: Bank rows per block of the block-maximum screen in :func:`topk_numpy`.
_SCREEN_BLOCK = 64


def topk_numpy(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every row of ``scores`` (float32 B×N) → (sims B×k, rows B×k), tie-stable.

    Rows come out by similarity descending, then bank row ascending; a tie group that
    straddles the k-th place keeps its lowest bank rows. For large banks a screen finds
    the candidates first: the k-th largest of the per-block maxima is a lower bound of
    the k-th largest score (k blocks reach it), so only scores at or above it are sorted.
    """
    b, n = scores.shape
    blocks = n // _SCREEN_BLOCK
    if k == n or blocks < 2 * k:
        return _topk_partition(scores, k)
    whole = blocks * _SCREEN_BLOCK
    maxima = scores[:, :whole].reshape(b, blocks, _SCREEN_BLOCK).max(axis=2)
    if n > whole:
        maxima = np.concatenate([maxima, scores[:, whole:].max(axis=1, keepdims=True)], axis=1)
    bound = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, -k]
    # only blocks whose maximum reaches the bound can hold candidates: gather just those
    row, block = np.nonzero(maxima >= bound[:, None])
    col = (block * _SCREEN_BLOCK)[:, None] + np.arange(_SCREEN_BLOCK)
    row = np.broadcast_to(row[:, None], col.shape)
    inside = col < n  # the tail block is shorter
    row, col = row[inside], col[inside]
    value = scores[row, col]
    hit = value >= bound[row]
    row, col, value = row[hit], col[hit], value[hit]
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    take = np.searchsorted(row, np.arange(b))[:, None] + np.arange(k)
    return value[take], col[take].astype(np.int64)


def _topk_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = scores.shape[1]
    if k == n:
        rows = np.broadcast_to(np.arange(n), scores.shape).copy()
    else:
        rows = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    sims = np.take_along_axis(scores, rows, axis=1)
    # argpartition picks an arbitrary subset of a tie group that straddles the k-th
    # place; those rows (rare) are redone so that the lower bank rows win.
    threshold = sims.min(axis=1)
    at_least = np.count_nonzero(scores >= threshold[:, None], axis=1)
    for r in np.flatnonzero(at_least > k):
        rows[r] = _resolve_row(scores[r], threshold[r], k)
        sims[r] = scores[r, rows[r]]
    return order_neighbours(sims, rows)


def _block_size(chunk: int, n: int) -> int:
    return max(1, min(chunk, _BLOCK_ELEMENTS // max(n, 1)))


# -- persistence helpers ------------------------------------------------------------


def _write_manifest(directory: Path, name: str, count: int, dim: int | None, extra: dict | None = None) -> None:
    manifest = {"index": name, "count": int(count), "dim": dim, "metric": METRIC, "format": FORMAT}
    manifest.update(extra or {})
    (directory / "index.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _prepare_save(name: str, directory: Path | str) -> Path:
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModusegError(f"cannot save index {name!r} to {directory}: it is a file; pass a directory path")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "index.json").is_file():
        raise ModusegError(
            f"cannot save index {name!r} to {directory}: it is a non-empty directory that is not an index "
            "directory (no index.json), and saving replaces it; pass a new or empty directory"
        )
    return directory


def _read_manifest(name: str, directory: Path | str) -> tuple[Path, dict[str, Any]]:
    directory = Path(directory)
    path = directory / "index.json"
    if not path.is_file():
        raise ModusegError(
            f"{directory} is not a {name} index directory (no index.json); "
            f"pass a directory written by the {name!r} index's save()"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModusegError(f"{path} is unreadable or corrupt ({exc}); save the index again") from exc
    if not isinstance(manifest, dict):
        raise ModusegError(f"{path} is not an index manifest (a JSON object is expected); save the index again")
    if manifest.get("index") != name:
        raise ModusegError(
            f"{directory} holds a {manifest.get('index')!r} index, not {name!r}; "
            f"load it with index {manifest.get('index')!r} or re-add the vectors to a {name!r} index"
        )
    if manifest.get("format") != FORMAT or manifest.get("metric") != METRIC:
        raise ModusegError(
            f"{path} has format {manifest.get('format')!r} and metric {manifest.get('metric')!r}; this moduseg reads "
            f"format {FORMAT} with metric {METRIC!r}: save the index again with this version"
        )
    count, dim = manifest.get("count"), manifest.get("dim")
    if not isinstance(count, int) or count < 0 or not (dim is None or (isinstance(dim, int) and dim > 0)):
        raise ModusegError(f"{path} has an invalid count {count!r} or dim {dim!r}; save the index again")
    return directory, manifest


def _load_labels(directory: Path, count: int) -> np.ndarray:
    path = directory / "labels.npy"
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModusegError(f"index file {path} is missing or corrupt ({exc}); save the index again") from exc
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ModusegError(
            f"index file {path} holds {labels.dtype} {labels.shape} but index.json says {count} integer labels; "
            "save the index again"
        )
    return labels.astype(np.int32)


# -- exact ----------------------------------------------------------------------------


class ExactIndex:
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

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        """Vector length, or None before the first ``add``/``load``."""
        return self._dim

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
        return SearchResult(sims, self.labels[rows].astype(np.int32))

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


# -- faiss ---------------------------------------------------------------------------

#: faiss GPU indexes answer at most this many neighbours per query (and probe at most this many cells).
_FAISS_GPU_MAX_K = 2048


def auto_nlist(n: int) -> int:
    """4·sqrt(n) cells, but at least 39 training vectors per cell (faiss's k-means guideline)."""
    return max(1, min(int(round(4 * np.sqrt(n))), n // 39))


class FaissIndex:
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

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        """Vector length, or None before the first ``add``/``load``."""
        return self._dim

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
        return SearchResult(sims, self.labels[rows].astype(np.int32))

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

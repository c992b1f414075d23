"""What the built-in indexes share: input checks, top-k ordering, and the saved layout.

Every index takes float32 ``N×C`` vectors with integer labels and returns neighbours by
similarity descending, among equal similarities the lower bank row first
(:func:`order_neighbours`; :func:`topk_numpy` completes a group of equal similarities that
straddles the k-th place the same way). A saved index is a directory with ``index.json``
(:func:`_write_manifest` / :func:`_read_manifest`: name, count, dim, metric, format), its
labels, and the backend's own files. numpy only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError

FORMAT = 1
METRIC = "inner_product"
_INT32_MAX = int(np.iinfo(np.int32).max)

#: A search block holds at most this many similarities (about 128 MiB of float32,
#: plus the top-k bookkeeping), whatever ``chunk`` says, so huge banks stay in memory.
_BLOCK_ELEMENTS = 1 << 25


# -- input checks shared by every index ------------------------------------------


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


class CountedIndex:
    """What every backend answers the same way: its size (``_count``) and vector length (``_dim``)."""

    _count: int
    _dim: int | None

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        """Vector length, or None before the first ``add``/``load``."""
        return self._dim

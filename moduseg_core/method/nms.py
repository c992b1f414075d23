"""Per-class mask non-maximum suppression and score-ordered rasterisation."""

from __future__ import annotations

import numpy as np

from ..types import BACKGROUND


def intersections(masks: np.ndarray) -> np.ndarray:
    """Exact pairwise intersection areas of ``bool N×H×W`` masks (``int64 N×N``).

    Pixels are grouped by the set of masks covering them (a bit signature); each
    distinct signature adds its pixel count to every pair it contains. Proposals
    overlap little, so there are few signatures and this is much cheaper than an
    ``N×HW`` matrix product.
    """
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0), np.int64)
    flat = masks.reshape(n, -1)
    signature = np.ascontiguousarray(np.packbits(flat, axis=0).T)  # HW × ceil(N/8)
    signature = signature[signature.any(axis=1)]
    if not len(signature):
        return np.zeros((n, n), np.int64)
    rows = signature.view(np.dtype((np.void, signature.shape[1]))).ravel()
    unique, counts = np.unique(rows, return_counts=True)
    bits = np.unpackbits(unique.view(np.uint8).reshape(len(unique), -1), axis=1)[:, :n].astype(np.int64)
    return (bits.T * counts) @ bits


def mask_nms(
    masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, *, iou_threshold: float = 0.4, min_area: int = 300
) -> np.ndarray:
    """Indices of the masks kept, per label: highest score first; drop masks smaller than
    ``min_area`` or whose IoU with a kept mask of the same label exceeds ``iou_threshold``."""
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    kept: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero((labels == label) & (areas >= min_area))
        if len(idx) == 0:
            continue
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        inter = intersections(masks[idx]).astype(np.float64)
        group_areas = areas[idx].astype(np.float64)
        union = group_areas[:, None] + group_areas[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        keep_local: list[int] = []
        for i in range(len(idx)):
            if keep_local and iou[i, keep_local].max() > iou_threshold:
                continue
            keep_local.append(i)
        kept.extend(idx[keep_local].tolist())
    return np.array(sorted(kept), dtype=np.int64)


def rasterize(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Paint masks by descending score; background masks paint nothing; a foreground
    mask paints its class on pixels not yet painted; the rest is 0."""
    semantic = np.zeros(shape, np.int32)
    painted = np.zeros(shape, bool)
    for i in np.argsort(-scores, kind="stable"):
        if labels[i] == BACKGROUND:
            continue
        fresh = masks[i] & ~painted
        semantic[fresh] = labels[i]
        painted |= fresh
    return semantic

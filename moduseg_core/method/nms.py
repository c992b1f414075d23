"""Per-class mask non-maximum suppression and score-ordered rasterisation."""

from __future__ import annotations

import numpy as np

from ..types import BACKGROUND


def _intersections(masks: np.ndarray) -> np.ndarray:
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    return flat @ flat.T


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
        inter = _intersections(masks[idx])
        group_areas = areas[idx].astype(np.float32)
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

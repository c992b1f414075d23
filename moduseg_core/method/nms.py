"""Per-class mask non-maximum suppression and score-ordered rasterisation."""

from __future__ import annotations

import numpy as np

from moduseg_core.contract.types import BACKGROUND

#: pixels per slice of the intersection product: each slice's float32 sums stay exact (< 2**24) and its
#: float32 copy of the masks stays small (64 masks × 2**20 pixels = 256 MiB at most)
_SLICE = 2**20


def intersections(masks: np.ndarray) -> np.ndarray:
    """Exact pairwise intersection areas of ``bool N×H×W`` masks (``int64 N×N``).

    One BLAS product of the masks as 0/1 floats per slice of pixels (numpy's integer matmul has no
    fast kernel). Within a slice every partial sum is a whole pixel count below 2**24, so float32 holds
    it exactly; the slices add up in int64. Measured against grouping pixels by the set of masks
    covering them, this was faster for clean and noisy masks alike (docs/performance.md).
    """
    n = len(masks)
    out = np.zeros((n, n), np.int64)
    if n == 0:
        return out
    flat = masks.reshape(n, -1)
    step = max(1, min(_SLICE, (2**26) // n))  # at most 256 MiB of float32 per slice
    for start in range(0, flat.shape[1], step):
        part = flat[:, start : start + step].astype(np.float32)
        out += np.rint(part @ part.T).astype(np.int64)
    return out


def mask_nms(
    masks: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.4,
    min_area: int = 300,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the masks kept, per label: highest score first; drop masks smaller than
    ``min_area`` or whose IoU with a kept mask of the same label exceeds ``iou_threshold``.

    ``boxes`` (``N×4`` from :func:`moduseg_core.method.pooling.bounding_boxes`) lets the
    greedy pass compare a mask only with kept masks whose boxes meet it, on the shared
    crop; a label whose boxes overlap so much that this would touch more pixels than one
    pass over all its masks uses exact whole-image intersections instead. Both give
    the same answer.
    """
    if boxes is None:
        from moduseg_core.method.pooling import bounding_boxes

        boxes = bounding_boxes(masks)
    areas = mask_areas(masks, boxes)
    kept: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero((labels == label) & (areas >= min_area))
        if len(idx) == 0:
            continue
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        if _crop_work(boxes[idx]) > len(idx) * masks[0].size:
            kept.extend(idx[_greedy_dense(np.take(masks, idx, axis=0), areas[idx], iou_threshold)].tolist())
        else:
            kept.extend(_greedy_boxes(masks, idx, areas, boxes, iou_threshold))
    return np.array(sorted(kept), dtype=np.int64)


def mask_areas(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Pixel count of every mask, counted inside its bounding box only."""
    return np.array(
        [np.count_nonzero(masks[i, y0:y1, x0:x1]) for i, (y0, y1, x0, x1) in enumerate(boxes.tolist())], np.int64
    )


def _crop_work(boxes: np.ndarray) -> int:
    """Pixels the box-restricted greedy pass would touch at most: the summed areas of all
    pairwise box intersections."""
    y0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.minimum(boxes[:, None, 1], boxes[None, :, 1])
    x0 = np.maximum(boxes[:, None, 2], boxes[None, :, 2])
    x1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    shared = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    return int(np.triu(shared, 1).sum())


def _iou_exceeds(inter: float, area_a: float, area_b: float, threshold: float) -> bool:
    union = area_a + area_b - inter
    return union > 0 and inter / max(union, 1e-9) > threshold


def _greedy_boxes(
    masks: np.ndarray, idx: np.ndarray, areas: np.ndarray, boxes: np.ndarray, threshold: float
) -> list[int]:
    kept: list[int] = []
    for i in idx.tolist():
        y0, y1, x0, x1 = boxes[i].tolist()
        suppressed = False
        for j in kept:
            by0, by1, bx0, bx1 = boxes[j].tolist()
            sy0, sy1, sx0, sx1 = max(y0, by0), min(y1, by1), max(x0, bx0), min(x1, bx1)
            if sy1 <= sy0 or sx1 <= sx0:
                inter = 0
            else:
                inter = int(np.count_nonzero(masks[i, sy0:sy1, sx0:sx1] & masks[j, sy0:sy1, sx0:sx1]))
            if _iou_exceeds(float(inter), float(areas[i]), float(areas[j]), threshold):
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def _greedy_dense(group: np.ndarray, group_areas: np.ndarray, threshold: float) -> list[int]:
    return greedy_from_intersections(intersections(group), group_areas, threshold)


def greedy_from_intersections(inter_counts: np.ndarray, group_areas: np.ndarray, threshold: float) -> list[int]:
    """The greedy pass over a label's masks in score order, from their exact pairwise intersections
    (``int64 N×N``) and areas: the positions kept. Shared by the host path and ``nms_device``."""
    inter = inter_counts.astype(np.float64)
    a = group_areas.astype(np.float64)
    union = a[:, None] + a[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    keep_local: list[int] = []
    for i in range(len(inter)):
        if keep_local and iou[i, keep_local].max() > threshold:
            continue
        keep_local.append(i)
    return keep_local


def rasterize(
    masks: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    shape: tuple[int, int],
    boxes: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """Paint masks by descending score; background masks paint nothing; a foreground
    mask paints its class on pixels not yet painted; the rest is 0. ``boxes`` (``N×4``,
    rows of ``masks``) restrict each mask's work to its bounding box. With ``order``, the
    i-th label / score belongs to ``masks[order[i]]`` (the kept rows, without copying them)."""
    semantic = np.zeros(shape, np.int32)
    painted = np.zeros(shape, bool)
    height, width = shape
    for i in np.argsort(-scores, kind="stable"):
        if labels[i] == BACKGROUND:
            continue
        row = int(order[i]) if order is not None else i
        y0, y1, x0, x1 = boxes[row].tolist() if boxes is not None else (0, height, 0, width)
        window = painted[y0:y1, x0:x1]
        fresh = masks[row, y0:y1, x0:x1] & ~window
        semantic[y0:y1, x0:x1][fresh] = labels[i]
        window |= fresh
    return semantic

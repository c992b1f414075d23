"""Boundary metrics: boundary F-score and Boundary IoU, per class, accumulated over images.

Both are counted like the confusion matrix: every image adds pixel counts per class
(``boundary_counts``), and the scores are computed once from the sums
(``boundary_scores``). A large image therefore weighs more than a small one, exactly as
in mIoU; nothing is a mean of per-image scores.

**Boundary F-score** (contour precision / recall within a tolerance). The contour of a
class is the set of its pixels with a 3×3 neighbour of another class; the image frame
is not a contour (pixels outside the image count as inside). A predicted contour pixel
is a hit when a ground-truth contour pixel of the same class lies within Euclidean
distance ``r`` of it, and vice versa for recall. ``r`` is ``tolerance`` pixels when
``tolerance >= 1``, else ``ceil(tolerance × image diagonal)`` (default 0.75 % of the
diagonal: 5 px on a 500×375 or 640×480 image). Per class ``P = Σ hits_pred / Σ pred``,
``R = Σ hits_gt / Σ gt`` over the images, ``F = 2PR / (P + R)`` (0 when P + R = 0).

**Boundary IoU** (Cheng et al., CVPR 2021). A mask's boundary region is the set of its
pixels within Chebyshev distance ``d`` of a pixel outside it, the image frame included
(the reference code pads with zeros before eroding); ``d = max(1, round(0.02 ×
diagonal))``. Per class ``BIoU = Σ |G_d ∩ P_d| / Σ |G_d ∪ P_d|`` over the images.

Void pixels (ground truth 255) follow mIoU: Boundary IoU counts no pixel where the
ground truth is void. The void band that PASCAL VOC draws along object edges is not a
class, so a ground-truth contour runs along the band's inner side and a predicted edge
usually falls inside the band, within the tolerance; only predicted contour pixels deep
inside a void area (farther than ``r`` from every non-void pixel) are left out of the
precision.

Means are taken over the classes with a non-empty ground-truth ∪ prediction (contour
pixels for the F-score, boundary-region pixels for Boundary IoU), like mIoU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moduseg_core.contract.types import IGNORE_INDEX

#: Default boundary F-score tolerance: a fraction of the image diagonal (< 1) or pixels (≥ 1).
BF_TOLERANCE = 0.0075
#: Default Boundary IoU dilation ratio (Cheng et al. 2021).
BIOU_DILATION = 0.02

#: Rows of the count array returned by ``boundary_counts``.
PRED_HIT, PRED, GT_HIT, GT, BIOU_INTER, BIOU_UNION = range(6)
ROWS = ("bf_pred_hit", "bf_pred", "bf_gt_hit", "bf_gt", "biou_inter", "biou_union")


def tolerance_px(image_hw: tuple[int, int], tolerance: float = BF_TOLERANCE) -> int:
    """The F-score matching distance in pixels for an image of this size."""
    if tolerance <= 0:
        raise ValueError(f"boundary tolerance must be positive, got {tolerance}")
    if tolerance >= 1:
        return int(round(tolerance))
    return max(1, math.ceil(tolerance * math.hypot(*image_hw)))


def biou_dilation_px(image_hw: tuple[int, int], ratio: float = BIOU_DILATION) -> int:
    """Boundary IoU's ``d`` in pixels: ``max(1, round(ratio × diagonal))``."""
    if ratio <= 0:
        raise ValueError(f"Boundary IoU dilation ratio must be positive, got {ratio}")
    return max(1, int(round(ratio * math.hypot(*image_hw))))


def _shift_or(out: np.ndarray, src: np.ndarray, step: int, axis: int) -> None:
    """``out |= src`` shifted by ``+step`` and by ``-step`` along ``axis`` (nothing wraps around)."""
    n = src.shape[axis]
    if step >= n:
        return
    lead = [slice(None)] * src.ndim
    tail = [slice(None)] * src.ndim
    lead[axis], tail[axis] = slice(step, None), slice(None, n - step)
    out[tuple(lead)] |= src[tuple(tail)]
    out[tuple(tail)] |= src[tuple(lead)]


def _grow(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Pixels within ``radius`` of a ``True`` pixel along ``axis`` (O(log radius) passes)."""
    out = mask.copy()
    reach = 0
    while reach < radius:
        step = min(reach + 1, radius - reach)
        src = out.copy()
        _shift_or(out, src, step, axis)
        reach += step
    return out


def _square_grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Chebyshev dilation: pixels within a (2·radius+1)² square of a ``True`` pixel."""
    return _grow(_grow(mask, radius, 1), radius, 0)


def contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 3×3 neighbour outside it; the image frame is not a contour."""
    mask = np.asarray(mask, dtype=bool)
    return mask & _square_grow(~mask, 1)


def inner_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Boundary IoU's region: pixels of ``mask`` within Chebyshev distance ``d`` of a pixel
    outside it, where everything beyond the image is outside."""
    mask = np.asarray(mask, dtype=bool)
    outside = np.pad(~mask, 1, constant_values=True)
    return mask & _square_grow(outside, d)[1:-1, 1:-1]


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of a ``True`` pixel (a disk dilation)."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    height = mask.shape[0]
    # row offset dy reaches ±isqrt(r² − dy²) columns; widths shrink as |dy| grows
    widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    across = {0: mask}
    current, reach = mask, 0
    for width in sorted(set(widths)):
        while reach < width:
            nxt = current.copy()
            _shift_or(nxt, current, 1, 1)
            current, reach = nxt, reach + 1
        across[width] = current
    out = across[widths[0]].copy()
    for dy in range(1, radius + 1):
        if dy >= height:
            break
        _shift_or(out, across[widths[dy]], dy, 0)
    return out


def _crop(box_of: np.ndarray, margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    rows = np.flatnonzero(box_of.any(axis=1))
    cols = np.flatnonzero(box_of.any(axis=0))
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, shape[0])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, shape[1])
    return slice(r0, r1), slice(c0, c1)


def boundary_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    n_classes: int,
    *,
    tolerance: float = BF_TOLERANCE,
    dilation_ratio: float = BIOU_DILATION,
) -> np.ndarray:
    """``int64 6×n_classes`` counts of one image (rows: ``ROWS``); sum them over images."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    counts = np.zeros((6, n_classes), np.int64)
    valid = gt != IGNORE_INDEX
    low = int(gt.min(initial=0))
    if low < 0:
        raise ValueError(f"ground truth holds class id {low}, outside 0..{n_classes - 1} and not 255")
    present = np.bincount(gt.ravel().astype(np.intp), minlength=n_classes)
    present[IGNORE_INDEX:IGNORE_INDEX + 1] = 0
    gt_ids = np.flatnonzero(present)
    if len(gt_ids) and gt_ids[-1] >= n_classes:
        raise ValueError(f"ground truth holds class id {int(gt_ids[-1])}, outside 0..{n_classes - 1} and not 255")
    pred = np.clip(pred, 0, n_classes - 1).astype(np.intp, copy=False)
    pred_ids = np.flatnonzero(np.bincount(pred.ravel(), minlength=n_classes))
    r = tolerance_px(gt.shape, tolerance)
    d = biou_dilation_px(gt.shape, dilation_ratio)
    # predicted contours deep inside void areas are not judged
    judged = valid if valid.all() else dilate_disk(valid, r)
    for c in np.union1d(gt_ids, pred_ids):
        c = int(c)
        g_full = (gt == c) & valid
        p_full = pred == c
        # everything below happens within one pixel of the class's box: a contour pixel needs an
        # outside neighbour, and pixels beyond the box are outside for both masks
        window = _crop(g_full | p_full, 1, gt.shape)
        g, p = g_full[window], p_full[window]
        gc, pc = contour(g), contour(p) & judged[window]
        if gc.any() or pc.any():
            counts[PRED, c] = pc.sum()
            counts[GT, c] = gc.sum()
            if gc.any() and pc.any():
                counts[PRED_HIT, c] = (pc & dilate_disk(gc, r)).sum()
                counts[GT_HIT, c] = (gc & dilate_disk(pc, r)).sum()
        gb, pb = inner_band(g, d), inner_band(p, d) & valid[window]
        counts[BIOU_INTER, c] = (gb & pb).sum()
        counts[BIOU_UNION, c] = (gb | pb).sum()
    return counts


@dataclass(frozen=True)
class BoundaryScores:
    precision: np.ndarray  # float64 per class, NaN where the class has no contour at all
    recall: np.ndarray
    f_score: np.ndarray
    iou: np.ndarray  # Boundary IoU per class, NaN where the union is empty
    mean_f: float
    mean_iou: float
    tolerance: float
    dilation_ratio: float

    def as_dict(self, class_names: list[str]) -> dict:
        def per_class(values: np.ndarray) -> dict:
            return {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, values, strict=True)}

        return {
            "f_score": self.mean_f,
            "iou": self.mean_iou,
            "tolerance": self.tolerance,
            "dilation_ratio": self.dilation_ratio,
            "per_class_f": per_class(self.f_score),
            "per_class_precision": per_class(self.precision),
            "per_class_recall": per_class(self.recall),
            "per_class_iou": per_class(self.iou),
        }


def boundary_scores(
    counts: np.ndarray, *, tolerance: float = BF_TOLERANCE, dilation_ratio: float = BIOU_DILATION
) -> BoundaryScores:
    """Per-class and mean boundary F-score and Boundary IoU from summed ``boundary_counts``."""
    c = np.asarray(counts, dtype=np.float64)
    present = (c[PRED] + c[GT]) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(c[PRED] > 0, c[PRED_HIT] / c[PRED], 0.0)
        recall = np.where(c[GT] > 0, c[GT_HIT] / c[GT], 0.0)
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        biou = np.where(c[BIOU_UNION] > 0, c[BIOU_INTER] / c[BIOU_UNION], np.nan)
    precision = np.where(present, precision, np.nan)
    recall = np.where(present, recall, np.nan)
    f = np.where(present, f, np.nan)
    mean_f = float(np.nanmean(f)) if present.any() else float("nan")
    mean_iou = float(np.nanmean(biou)) if (~np.isnan(biou)).any() else float("nan")
    return BoundaryScores(precision, recall, f, biou, mean_f, mean_iou, tolerance, dilation_ratio)

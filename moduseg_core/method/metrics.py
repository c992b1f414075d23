"""Confusion matrix, per-class IoU and mIoU; ``Accumulator`` adds the boundary metrics (``boundary.py``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..types import IGNORE_INDEX
from .boundary import BF_TOLERANCE, BIOU_DILATION, BoundaryScores, boundary_counts, boundary_scores


def confusion(gt: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``n×n`` counts (rows: ground truth, columns: prediction) over pixels whose gt ≠ 255."""
    if gt.shape != pred.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    valid = gt != IGNORE_INDEX
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    bad = (g < 0) | (g >= n_classes)
    if bad.any():
        raise ValueError(f"ground truth holds class id {int(g[bad][0])}, outside 0..{n_classes - 1} and not 255")
    p = np.clip(p, 0, n_classes - 1)
    return np.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class Scores:
    iou: np.ndarray  # float64 per class, NaN where the union is empty
    miou: float
    pixel_accuracy: float
    boundary: BoundaryScores | None = None

    def as_dict(self, class_names: list[str]) -> dict:
        out = {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class_iou": {
                name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, self.iou)
            },
        }
        if self.boundary is not None:
            out["boundary"] = self.boundary.as_dict(class_names)
        return out


def scores(matrix: np.ndarray) -> Scores:
    """IoU_c = TP/(TP+FP+FN); mIoU over classes with a non-empty union."""
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else float("nan")
    total = matrix.sum()
    accuracy = float(tp.sum() / total) if total else float("nan")
    return Scores(iou=iou, miou=miou, pixel_accuracy=accuracy)


class Accumulator:
    """Adds up one image after another: the confusion matrix and the boundary counts."""

    def __init__(
        self,
        n_classes: int,
        *,
        boundary: bool = True,
        tolerance: float = BF_TOLERANCE,
        dilation_ratio: float = BIOU_DILATION,
    ):
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), np.int64)
        self.boundary = np.zeros((6, n_classes), np.int64) if boundary else None
        self.tolerance = tolerance
        self.dilation_ratio = dilation_ratio
        self.images = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion(gt, pred, self.n_classes)
        if self.boundary is not None:
            self.boundary += boundary_counts(
                gt, pred, self.n_classes, tolerance=self.tolerance, dilation_ratio=self.dilation_ratio
            )
        self.images += 1

    def scores(self) -> Scores:
        result = scores(self.matrix)
        if self.boundary is None:
            return result
        bound = boundary_scores(self.boundary, tolerance=self.tolerance, dilation_ratio=self.dilation_ratio)
        return replace(result, boundary=bound)

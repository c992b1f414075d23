"""Confusion matrix, per-class IoU and mIoU; ``Accumulator`` adds the boundary metrics (``boundary.py``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moduseg_core.contract.types import IGNORE_INDEX
from moduseg_core.method.boundary import BF_TOLERANCE, BIOU_DILATION, BoundaryScores, boundary_counts, boundary_scores


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


#: How mIoU averages the per-class IoUs (``method.miou_average``). ``present`` (METHOD.md, the
#: default): over the classes with a non-empty union. ``all`` (the released code): over every
#: scored class, a class with an empty union counting as 0. Equal when every class occurs (full VOC
#: val); on a subset ``all`` is lower.
MIOU_AVERAGES = ("present", "all")


@dataclass(frozen=True)
class Scores:
    iou: np.ndarray  # float64 per class, NaN where the union is empty or the class is not scored
    miou: float
    pixel_accuracy: float
    boundary: BoundaryScores | None = None
    average: str = "present"  # which mean ``miou`` is (MIOU_AVERAGES)
    miou_present: float = float("nan")
    miou_all: float = float("nan")
    not_scored: tuple[int, ...] = ()  # classes left out of every mean (class 0 of a dataset without background)

    def as_dict(self, class_names: list[str]) -> dict:
        out = {
            "miou": self.miou,
            "miou_average": self.average,
            "miou_present": self.miou_present,
            "miou_all": self.miou_all,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class_iou": {
                name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, self.iou, strict=True)
            },
        }
        if self.not_scored:
            out["not_scored"] = [class_names[c] for c in self.not_scored]
        if self.boundary is not None:
            out["boundary"] = self.boundary.as_dict(class_names)
        return out


def miou_note(report: dict) -> str:
    """Which mean a report's mIoU is (``mean over present classes``), with the other one beside it when
    it differs (``mean over present classes; over all classes 41.00``)."""
    average = report.get("miou_average", "present")
    text = f"mean over {average} classes"
    other = "all" if average == "present" else "present"
    value = report.get(f"miou_{other}")
    if value is not None and value == value and abs(value - report["miou"]) >= 5e-7:
        text += f"; over {other} classes {100 * value:.2f}"
    return text


def scores(matrix: np.ndarray, *, average: str = "present", not_scored: tuple[int, ...] = ()) -> Scores:
    """IoU_c = TP/(TP+FP+FN); mIoU over classes with a non-empty union (``average="present"``) or over
    every class, an empty union counting as 0 (``"all"``). ``not_scored`` classes get no IoU and are in
    neither mean (their pixels still count: a pixel predicted as one is wrong for its true class)."""
    if average not in MIOU_AVERAGES:
        raise ValueError(f"miou average {average!r} is not one of {', '.join(MIOU_AVERAGES)}")
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    scored = np.ones(len(tp), bool)
    scored[list(not_scored)] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where((union > 0) & scored, tp / union, np.nan)
    present = ~np.isnan(iou)
    miou_present = float(iou[present].mean()) if present.any() else float("nan")
    miou_all = float(np.nan_to_num(iou[scored], nan=0.0).mean()) if scored.any() else float("nan")
    total = matrix.sum()
    accuracy = float(tp.sum() / total) if total else float("nan")
    miou = miou_present if average == "present" else miou_all
    return Scores(iou=iou, miou=miou, pixel_accuracy=accuracy, average=average, miou_present=miou_present,
                  miou_all=miou_all, not_scored=tuple(sorted(int(c) for c in not_scored)))


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

    def scores(self, *, average: str = "present", not_scored: tuple[int, ...] = ()) -> Scores:
        result = scores(self.matrix, average=average, not_scored=not_scored)
        if self.boundary is None:
            return result
        bound = boundary_scores(self.boundary, tolerance=self.tolerance, dilation_ratio=self.dilation_ratio)
        return replace(result, boundary=bound)

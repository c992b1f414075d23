"""Boundary F-score and Boundary IoU on hand-made masks with numbers worked out by hand,
the Boundary IoU region against the reference code's OpenCV recipe, and their place in
`moduseg evaluate` on real coco-mini masks."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.method.boundary import (
    BF_TOLERANCE,
    BIOU_INTER,
    BIOU_UNION,
    GT,
    GT_HIT,
    PRED,
    PRED_HIT,
    biou_dilation_px,
    boundary_counts,
    boundary_scores,
    contour,
    dilate_disk,
    inner_band,
    tolerance_px,
)
from moduseg_core.method.metrics import Accumulator


def _squares(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """10×10: a 4×4 square of class 1 at rows/cols 3..6 in the ground truth; the prediction's is
    moved ``shift`` columns right."""
    gt = np.zeros((10, 10), np.int32)
    gt[3:7, 3:7] = 1
    pred = np.zeros((10, 10), np.int32)
    pred[3:7, 3 + shift : 7 + shift] = 1
    return gt, pred


def test_contour_is_the_inner_ring_and_the_frame_is_not_a_contour():
    mask = np.zeros((6, 7), bool)
    mask[1:5, 2:6] = True
    expected = mask.copy()
    expected[2:4, 3:5] = False  # the 2×2 interior
    assert np.array_equal(contour(mask), expected)
    # a region filling the left half touches the frame on three sides: only its right column is contour
    half = np.zeros((5, 6), bool)
    half[:, :3] = True
    expected = np.zeros_like(half)
    expected[:, 2] = True
    assert np.array_equal(contour(half), expected)


def test_inner_band_counts_the_frame_as_outside():
    full = np.ones((7, 7), bool)
    band = inner_band(full, 2)
    expected = np.ones((7, 7), bool)
    expected[2:5, 2:5] = False  # only the centre 3×3 is farther than 2 from the frame
    assert np.array_equal(band, expected)


@pytest.mark.parametrize("ratio", [0.02, 0.05, 0.15])
def test_inner_band_equals_the_reference_opencv_recipe(ratio):
    """Cheng et al.'s mask_to_boundary: pad with one zero pixel, erode d times with a 3×3 kernel, subtract."""
    rng = np.random.default_rng(7)
    for _ in range(5):
        seeds = (rng.random((60, 90)) < 0.05).astype(np.uint8)
        mask = cv2.dilate(seeds, np.ones((7, 7), np.uint8))
        h, w = mask.shape
        d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
        padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
        reference = (mask - eroded).astype(bool)
        assert d == biou_dilation_px((h, w), ratio)
        assert np.array_equal(inner_band(mask.astype(bool), d), reference)


@pytest.mark.parametrize("radius", [1, 2, 3, 6])
def test_disk_dilation_is_euclidean(radius):
    mask = np.zeros((21, 23), bool)
    mask[10, 11] = True
    mask[0, 0] = True
    yy, xx = np.mgrid[:21, :23]
    expected = ((yy - 10) ** 2 + (xx - 11) ** 2 <= radius**2) | (yy**2 + xx**2 <= radius**2)
    assert np.array_equal(dilate_disk(mask, radius), expected)


def test_tolerances_in_pixels():
    assert tolerance_px((375, 500)) == 5  # 0.75 % of 625 = 4.69 → 5
    assert tolerance_px((480, 640)) == 6  # 0.75 % of 800 = 6
    assert tolerance_px((480, 640), 3) == 3  # ≥ 1: pixels
    assert biou_dilation_px((480, 640)) == 16  # 2 % of 800
    assert biou_dilation_px((10, 10)) == 1  # never below one pixel
    with pytest.raises(ValueError):
        tolerance_px((10, 10), 0)


def test_shifted_square_exact_counts():
    """Worked by hand (docstring of _squares; tolerance 1 px; Boundary IoU d = 1 on a 10×10 image).

    Class 1: 12 contour pixels each; the prediction's right column and the ground truth's left
    column are 2 px from the other contour and miss, as do the two far corners of each: 8 of 12
    hit both ways → P = R = F = 2/3. Boundary bands (d = 1) are the contours; they share
    rows 3 and 6 at columns 5, 6: 4 of a union of 20 → 0.2.
    Background: its contour is the 20-pixel ring around each square (the frame is not a contour);
    12 of 20 hit both ways → F = 0.6. Its Boundary IoU band adds the 36 frame pixels: ground truth
    56, prediction 50 (its ring's column 9 is frame), intersection 36 + 8 → 44 / 62.
    """
    gt, pred = _squares(2)
    counts = boundary_counts(gt, pred, 2, tolerance=1)
    assert counts[:, 1].tolist() == [8, 12, 8, 12, 4, 20]
    assert counts[:, 0].tolist() == [12, 20, 12, 20, 44, 62]
    s = boundary_scores(counts, tolerance=1)
    np.testing.assert_allclose(s.precision, [0.6, 2 / 3])
    np.testing.assert_allclose(s.recall, [0.6, 2 / 3])
    np.testing.assert_allclose(s.f_score, [0.6, 2 / 3])
    np.testing.assert_allclose(s.iou, [44 / 62, 0.2])
    assert s.mean_f == pytest.approx((0.6 + 2 / 3) / 2)
    assert s.mean_iou == pytest.approx((44 / 62 + 0.2) / 2)


def test_tolerance_decides_hits():
    gt, pred = _squares(2)
    # with 2 px every contour pixel of either square is within reach of the other's
    counts = boundary_counts(gt, pred, 2, tolerance=2)
    assert counts[PRED_HIT, 1] == counts[PRED, 1] == 12
    assert counts[GT_HIT, 1] == counts[GT, 1] == 12
    assert boundary_scores(counts).f_score[1] == 1.0


def test_perfect_and_missing_predictions():
    gt, _ = _squares(0)
    perfect = boundary_scores(boundary_counts(gt, gt, 3))
    assert perfect.mean_f == 1.0 and perfect.mean_iou == 1.0
    assert np.isnan(perfect.f_score[2]) and np.isnan(perfect.iou[2])  # class 2: in neither map
    # predicting all background: class 1 has ground-truth contour but none predicted → F 0, BIoU 0;
    # background's predicted map has no contour at all (the frame is not one) → F 0
    empty = boundary_scores(boundary_counts(gt, np.zeros_like(gt), 2))
    assert empty.f_score.tolist() == [0.0, 0.0]
    assert empty.iou[1] == 0.0


def test_void_pixels_are_not_counted():
    gt, pred = _squares(0)
    gt = gt.copy()
    gt[:, 8:] = 255  # a void strip; the prediction is right elsewhere
    pred = pred.copy()
    pred[2:8, 9] = 1  # a spurious line inside the void, 2 px from the nearest valid pixel (column 7)
    counts = boundary_counts(gt, pred, 2, tolerance=1)
    # beyond the 1-px tolerance from every valid pixel: the line is not judged
    assert counts[PRED, 1] == 12 and counts[PRED_HIT, 1] == 12
    # Boundary IoU counts no void pixel: the square's band is unchanged
    assert counts[BIOU_INTER, 1] == counts[BIOU_UNION, 1] == 12
    # within the tolerance of valid pixels a predicted edge in the void is judged (VOC's void band)
    near = boundary_counts(gt, pred, 2, tolerance=2)
    assert near[PRED, 1] == 12 + 6 and near[PRED_HIT, 1] == 12


def test_accumulation_sums_counts_over_images():
    gt_a, pred_a = _squares(0)  # perfect
    gt_b, pred_b = _squares(2)
    acc = Accumulator(2, tolerance=1)
    acc.add(gt_a, pred_a)
    acc.add(gt_b, pred_b)
    scores = acc.scores()
    # class 1: hits (12 + 8) of (12 + 12) both ways → 20/24, not the mean of 1 and 2/3 per image
    assert scores.boundary.f_score[1] == pytest.approx(20 / 24)
    assert scores.boundary.iou[1] == pytest.approx((12 + 4) / (12 + 20))
    d = scores.as_dict(["background", "thing"])
    assert d["boundary"]["per_class_f"]["thing"] == pytest.approx(20 / 24)
    assert d["boundary"]["tolerance"] == 1
    assert BF_TOLERANCE == 0.0075


def test_wrong_sizes_and_ids_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        boundary_counts(np.zeros((3, 3), int), np.zeros((3, 4), int), 2)
    with pytest.raises(ValueError, match="class id 7"):
        boundary_counts(np.full((3, 3), 7), np.zeros((3, 3), int), 2)


def test_evaluate_prints_boundary_scores_on_real_masks(coco_mini, tmp_path, capsys):
    """Ground-truth masks scored against themselves: every score is 100; a shifted copy scores less."""
    ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:3]
    preds = tmp_path / "predictions"
    preds.mkdir()
    for image_id in ids:
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{image_id}.png", preds)
    args = ["evaluate", str(preds), "--dataset", "voc", "--set", f"dataset.root={coco_mini}",
            "--set", "dataset.mask_dir=SegmentationClassVOC", "--set", "dataset.labels_file=image_labels_voc.json",
            "--set", "eval_limit=3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mIoU 100.00 on 3 images" in out
    assert "boundary F 100.00" in out and "Boundary IoU 100.00" in out

    from PIL import Image

    from moduseg_core.files.io import write_png

    for image_id in ids:
        mask = np.asarray(Image.open(preds / f"{image_id}.png"))
        write_png(preds / f"{image_id}.png", np.roll(mask, 12, axis=1))
    assert main(args) == 0
    out = capsys.readouterr().out
    bf = float(out.split("boundary F ")[1].split()[0])
    biou = float(out.split("Boundary IoU ")[1].split()[0])
    miou = float(out.split("mIoU ")[1].split()[0])
    # a 12-px shift is beyond the 6-px tolerance: boundaries suffer more than areas
    assert bf < miou and biou < miou and bf < 60

"""Each METHOD.md rule on hand-made cases, checked against its definition (and OpenCV where it is the reference)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from moduseg_core.contract.types import FeatureMap, Geometry
from moduseg_core.method.bank_filter import outlier_keep
from moduseg_core.method.metrics import confusion, scores
from moduseg_core.method.nms import mask_nms, rasterize
from moduseg_core.method.pooling import patch_weights, pool
from moduseg_core.method.purify import erode
from moduseg_core.method.vote import vote


def _random_mask(rng, h, w, boxes=3):
    mask = np.zeros((h, w), bool)
    for _ in range(boxes):
        y, x = rng.integers(0, h), rng.integers(0, w)
        dy, dx = rng.integers(4, max(5, h)), rng.integers(4, max(5, w))
        mask[y : y + dy, x : x + dx] = True
    return mask


# -- purification ---------------------------------------------------------------------------


def test_erosion_border_counts_as_inside():
    mask = np.zeros((60, 80), bool)
    mask[:30, :40] = True  # touches the top and left edges
    out = erode(mask, 20)
    # eaten 20 px from the inner edges only: rows 0..9, cols 0..19 survive
    assert out[:10, :20].all()
    assert not out[10:, :].any() and not out[:, 20:].any()


def test_erosion_full_image_survives_whole():
    assert erode(np.ones((50, 50), bool), 20).all()


def test_erosion_equals_chebyshev_definition():
    rng = np.random.default_rng(1)
    mask = _random_mask(rng, 40, 50, boxes=4)
    r = 6
    expected = np.zeros_like(mask)
    for y in range(40):
        for x in range(50):
            expected[y, x] = mask[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].all()
    assert np.array_equal(erode(mask, r), expected)


@pytest.mark.parametrize("seed", range(8))
def test_erosion_matches_opencv_default(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 120, 2)
    mask = _random_mask(rng, h, w)
    iterations = int(rng.integers(1, 25))
    reference = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=iterations).astype(bool)
    assert np.array_equal(erode(mask, iterations), reference)


# -- soft pooling weights -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_patch_weights_equal_inter_area_of_padded_mask(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(15, 100, 2))
    patch = int(rng.choice([8, 14, 16]))
    mask = _random_mask(rng, h, w)
    geometry = Geometry.native(h, w, patch)
    padded = np.zeros(geometry.padded_hw, np.float32)
    padded[:h, :w] = mask
    gh, gw = geometry.grid_hw
    reference = cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(patch_weights(mask[None], geometry)[0], reference, atol=1e-5)


def test_patch_weights_in_resized_geometry_are_footprint_fractions():
    mask = np.zeros((20, 40), bool)
    mask[:, :10] = True  # left quarter
    geometry = Geometry.resized(20, 40, 10, 20, 10)  # halve, then a 1×2 grid of 10-px patches
    w = patch_weights(mask[None], geometry)[0]
    # the left patch covers image columns 0..19; half of it is under the mask
    np.testing.assert_allclose(w, [[0.5, 0.0]], atol=1e-6)


def test_patch_weights_reject_wrong_size():
    with pytest.raises(ValueError, match="does not match"):
        patch_weights(np.zeros((1, 10, 10), bool), Geometry.native(12, 10, 2))


def test_soft_pool_formula_and_skips():
    geometry = Geometry.native(4, 4, 2)
    tokens = np.array([[[1, 0], [0, 1]], [[1, 1], [0, 0]]], np.float32)
    features = FeatureMap(tokens, geometry)
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True  # patch (0,0) fully
    masks[0, 0, 2] = True  # a quarter of patch (0,1)
    masks[2, 2:, 2:] = True  # only the zero token: norm 0 → dropped
    out = pool(features, patch_weights(masks, geometry))
    expected = np.array([1.0, 0.25]) / np.linalg.norm([1.0, 0.25])
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert not out[1].any(), "an empty mask has no weight and is skipped"
    assert not out[2].any(), "a vanishing pooled vector is dropped"


# -- bank filter ------------------------------------------------------------------------------


def test_outlier_filter_drops_floor_quarter_of_foreground_only():
    vectors = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [0.05, 0.05], [9, 9], [9, 9], [9, 9], [9, 9]], np.float32)
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    keep = outlier_keep(vectors, labels, 0.25)
    # class 1 has 5 vectors: floor(1.25) = 1 dropped, the far one; background keeps all
    assert keep.tolist() == [True, True, True, False, True, True, True, True, True]


def test_outlier_filter_small_classes_keep_everything():
    labels = np.array([2, 2, 2])
    assert outlier_keep(np.eye(3, dtype=np.float32), labels, 0.25).all()


# -- vote ------------------------------------------------------------------------------------------


def test_vote_majority_then_similarity_sum():
    sims = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.5, 0.8, 0.7], [0.2, 0.9, 0.3, 0.8]], np.float32)
    labels = np.array([[1, 2, 2, 3], [1, 2, 1, 2], [1, 2, 1, 2]])
    winner, score = vote(sims, labels)
    # row 0: label 2 has the most votes; row 1: 2-2 tie, sums 1.7 vs 1.2 → 1; row 2: tie, 0.5 vs 1.7 → 2
    assert winner.tolist() == [2, 1, 2]
    np.testing.assert_allclose(score, [0.75, 0.85, 0.85], atol=1e-6)


# -- NMS and rasterisation ------------------------------------------------------------------


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_nms_per_class_iou_and_area():
    shape = (40, 40)
    masks = np.stack(
        [
            _box(shape, 0, 20, 0, 20),  # 400 px, label 1, best
            _box(shape, 0, 20, 5, 25),  # IoU 300/500 = 0.6 with #0 → dropped
            _box(shape, 0, 20, 10, 30),  # IoU 200/600 = 0.33 with #0 → kept
            _box(shape, 0, 20, 5, 25),  # same as #1 but label 2: other class → kept
            _box(shape, 30, 40, 30, 40),  # 100 px < 300 → dropped
        ]
    )
    labels = np.array([1, 1, 1, 2, 1])
    scores_ = np.array([0.9, 0.8, 0.7, 0.1, 0.95], np.float32)
    kept = mask_nms(masks, labels, scores_, iou_threshold=0.4, min_area=300)
    assert kept.tolist() == [0, 2, 3]


def test_nms_threshold_is_strict():
    shape = (10, 100)
    a = _box(shape, 0, 10, 0, 70)  # 700 px
    b = _box(shape, 0, 10, 30, 100)  # 700 px, intersection 400, union 1000 → IoU exactly 0.4
    kept = mask_nms(
        np.stack([a, b]), np.array([1, 1]), np.array([0.9, 0.8], np.float32), iou_threshold=0.4, min_area=300
    )
    assert kept.tolist() == [0, 1]


def test_rasterize_by_score_background_paints_nothing():
    shape = (4, 4)
    low = _box(shape, 0, 4, 0, 4)
    high = _box(shape, 0, 2, 0, 2)
    bg = _box(shape, 2, 4, 2, 4)
    out = rasterize(np.stack([low, high, bg]), np.array([3, 5, 0]), np.array([0.1, 0.9, 0.99], np.float32), shape)
    expected = np.full(shape, 3)
    expected[:2, :2] = 5
    # the background mask has the best score but paints nothing, so class 3 fills its pixels
    assert np.array_equal(out, expected)


def test_rasterize_unpainted_pixels_are_background():
    out = rasterize(np.zeros((0, 3, 3), bool), np.zeros(0, int), np.zeros(0, np.float32), (3, 3))
    assert not out.any()


# -- metrics -------------------------------------------------------------------------------------


def test_miou_ignores_255_and_empty_classes():
    gt = np.array([[0, 0, 1, 1], [255, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 1, 0]])
    matrix = confusion(gt, pred, 4)
    assert matrix.sum() == 6  # the two 255 pixels are not counted
    result = scores(matrix)
    # class 0: TP 1, FP 1, FN 1 → 1/3; class 1: TP 3, FP 1, FN 1 → 3/5; classes 2, 3: no gt, no counted pred
    np.testing.assert_allclose(result.iou[:2], [1 / 3, 3 / 5])
    assert np.isnan(result.iou[2]) and np.isnan(result.iou[3])
    assert result.miou == pytest.approx((1 / 3 + 3 / 5) / 2)


def test_confusion_rejects_unknown_gt_ids():
    with pytest.raises(ValueError, match="class id 9"):
        confusion(np.array([[9]]), np.array([[0]]), 4)


def test_intersections_exact_against_matrix_product():
    from moduseg_core.method.nms import intersections

    rng = np.random.default_rng(3)
    masks = np.stack([_random_mask(rng, 37, 53, boxes=2) for _ in range(70)])  # > 64 masks: several signature bytes
    flat = masks.reshape(len(masks), -1).astype(np.int64)
    assert np.array_equal(intersections(masks), flat @ flat.T)


# -- the box-restricted fast paths give the whole-image answers -------------------------------------


def _reference_nms(masks, labels, scores_, iou_threshold, min_area):
    """Greedy per-label NMS straight from the rule, on whole-image masks."""
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    kept = []
    for label in np.unique(labels):
        order = [i for i in np.argsort(-scores_, kind="stable") if labels[i] == label and areas[i] >= min_area]
        chosen = []
        for i in order:
            ious = [(masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum() for j in chosen]
            if not ious or max(ious) <= iou_threshold:
                chosen.append(i)
        kept += chosen
    return sorted(kept)


def test_bounding_boxes_are_tight_and_empty_masks_get_zero_boxes():
    from moduseg_core.method.pooling import bounding_boxes

    rng = np.random.default_rng(5)
    masks = np.stack([_random_mask(rng, 41, 29, boxes=2) for _ in range(12)] + [np.zeros((41, 29), bool)])
    boxes = bounding_boxes(masks)
    for mask, (y0, y1, x0, x1) in zip(masks[:-1], boxes[:-1], strict=True):
        ys, xs = np.nonzero(mask)
        assert (y0, y1, x0, x1) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    assert boxes[-1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(4))
def test_nms_box_path_and_dense_path_match_the_rule(seed):
    """Small scattered masks take the box-restricted path, large overlapping ones the
    whole-image path; both must keep exactly what the rule keeps."""
    rng = np.random.default_rng(seed)
    small = [_box((120, 160), y, y + 25, x, x + 25) for y, x in rng.integers(0, 130, (40, 2)) % [95, 135]]
    large = [_random_mask(rng, 120, 160, boxes=2) for _ in range(25)]
    masks = np.stack(small + large)
    labels = rng.integers(0, 3, len(masks))
    scores_ = rng.random(len(masks)).astype(np.float32)
    kept = mask_nms(masks, labels, scores_, iou_threshold=0.4, min_area=300)
    assert kept.tolist() == _reference_nms(masks, labels, scores_, 0.4, 300)


def test_patch_weights_box_restriction_equals_whole_image_products():
    from moduseg_core.method.pooling import _overlap_matrix

    rng = np.random.default_rng(11)
    masks = np.stack([_random_mask(rng, 90, 70, boxes=2) for _ in range(9)] + [np.zeros((90, 70), bool)])
    for geometry in (Geometry.native(90, 70, 14), Geometry((90, 70), (63, 49), (70, 56), 14)):
        gh, gw = geometry.grid_hw
        rows = _overlap_matrix(90, geometry.resized_hw[0], gh, 14)
        cols = _overlap_matrix(70, geometry.resized_hw[1], gw, 14)
        whole = np.einsum("ih,nhw,jw->nij", rows, masks.astype(np.float32), cols)
        np.testing.assert_allclose(patch_weights(masks, geometry), whole, atol=1e-6)


def test_rasterize_with_boxes_equals_without():
    from moduseg_core.method.pooling import bounding_boxes

    rng = np.random.default_rng(2)
    masks = np.stack([_random_mask(rng, 50, 60, boxes=2) for _ in range(15)])
    labels = rng.integers(0, 4, 15)
    scores_ = rng.random(15).astype(np.float32)
    plain = rasterize(masks, labels, scores_, (50, 60))
    assert np.array_equal(rasterize(masks, labels, scores_, (50, 60), bounding_boxes(masks)), plain)
    assert plain.any()


def test_rasterize_kept_rows_in_place_equals_painting_a_copy_and_prediction_masks_are_the_kept_rows():
    from moduseg_core.contract.types import Prediction
    from moduseg_core.method.pooling import bounding_boxes

    rng = np.random.default_rng(4)
    masks = np.stack([_random_mask(rng, 40, 50, boxes=2) for _ in range(12)])
    keep = np.array([0, 3, 4, 7, 11])
    labels = rng.integers(0, 4, len(keep))
    scores_ = rng.random(len(keep)).astype(np.float32)
    copied = rasterize(masks[keep], labels, scores_, (40, 50))
    boxes = bounding_boxes(masks)
    assert np.array_equal(rasterize(masks, labels, scores_, (40, 50), boxes, order=keep), copied)
    prediction = Prediction(copied, masks, labels, scores_, kept=keep)
    assert np.array_equal(prediction.masks, masks[keep]) and prediction.masks is prediction.masks


def test_intersections_exact_on_noisy_masks_and_beyond_float32_counts():
    """Noisy masks (random-weight EoMT gave them on the GPU check, where an integer product took minutes per
    image): the product runs in float32 per slice of pixels and must stay exact, also past 2**24 pixels, where
    one float32 sum could no longer count, and across the slices' boundaries."""
    from moduseg_core.method.nms import intersections

    rng = np.random.default_rng(3)
    noisy = rng.random((40, 120, 160)) < 0.5
    flat = noisy.reshape(40, -1).astype(np.int64)
    assert np.array_equal(intersections(noisy), flat @ flat.T)

    big = np.zeros((3, 4099, 4099), bool)  # 16,801,801 pixels > 2**24 (odd: float32 cannot hold it)
    big[0] = True
    big[1, :, :4097] = True
    big[2, ::2] = True
    expected = np.array([[np.count_nonzero(a & b) for b in big] for a in big])
    assert expected[0, 0] > 2**24
    assert np.array_equal(intersections(big), expected)


def test_an_image_without_proposals_is_checked_not_refused():
    """A proposer that finds no mask (SAM at its default thresholds on a flat image) gives 0×H×W proposals: the
    predictor's size/area check passes them on empty, and keeps masks of at least ``min_mask_area`` pixels."""
    from types import SimpleNamespace

    from moduseg_core import Proposals
    from moduseg_core.contract.config import MethodConfig
    from moduseg_core.pipeline.inference import Predictor

    image = np.zeros((6, 8, 3), np.uint8)
    method = MethodConfig(min_mask_area=3)
    predictor = Predictor(None, SimpleNamespace(name="sam"), None, None, method)  # type: ignore[arg-type]
    assert len(predictor.checked(Proposals.empty(6, 8), image)) == 0
    masks = np.zeros((2, 6, 8), bool)
    masks[0, :1, :2], masks[1, :2, :2] = True, True  # 2 and 4 pixels
    kept = predictor.checked(Proposals(masks, np.array([0.9, 0.5], np.float32)), image)
    assert len(kept) == 1 and kept.masks[0].sum() == 4

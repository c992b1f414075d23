"""NMS and painting on device tensors (moduseg_core.method.nms_device) give the host path's answers exactly:
the same kept masks, the same class map, on torch's CPU device standing in for a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from moduseg_core.method import nms, nms_device
from moduseg_core.method.pooling import bounding_boxes

torch = pytest.importorskip("torch")


def blobs(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Overlapping rectangles and ellipses of many sizes, some duplicated, some tiny, some empty."""
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(2, h // 2), rng.integers(2, w // 2)
        if i % 3:
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            masks[i, max(0, cy - ry) : cy + ry, max(0, cx - rx) : cx + rx] = True
    masks[n // 2] = masks[n // 3]  # an exact duplicate: IoU 1
    masks[-1] = False  # an empty mask
    return masks


@pytest.mark.parametrize("seed", range(6))
def test_nms_and_painting_equal_the_host_path(seed):
    rng = np.random.default_rng(seed)
    masks = blobs(rng, 60, (97, 131))
    labels = rng.integers(0, 4, len(masks)).astype(np.int64)  # 0 = background: never painted
    scores = np.round(rng.random(len(masks)), 1).astype(np.float32)  # many ties: the stable order decides
    for threshold, min_area in ((0.4, 300), (0.1, 0), (0.8, 50)):
        host = nms.mask_nms(masks, labels, scores, iou_threshold=threshold, min_area=min_area)
        device = nms_device.mask_nms(torch.from_numpy(masks), labels, scores, iou_threshold=threshold,
                                     min_area=min_area)
        np.testing.assert_array_equal(device, host)
        boxes = bounding_boxes(masks)
        want = nms.rasterize(masks, labels[host], scores[host], masks.shape[1:], boxes, order=host)
        got = nms_device.rasterize(torch.from_numpy(masks), labels[host], scores[host], masks.shape[1:], order=host)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    assert len(host) and (want > 0).any()


def test_intersections_are_exact_across_slices(monkeypatch):
    rng = np.random.default_rng(0)
    masks = rng.random((5, 300, 400)) < 0.7
    monkeypatch.setattr(nms_device, "SLICE", 1000)  # many slices, each summed in float32, added in int64
    flat = masks.reshape(5, -1).astype(np.int64)
    np.testing.assert_array_equal(nms_device.intersections(torch.from_numpy(masks)), flat @ flat.T)


def test_intersections_ignore_a_surrounding_bfloat16_autocast():
    masks = np.ones((2, 64, 64), bool)  # 4,096 pixels: bfloat16 holds 4,096 but not 4,095 or 4,097
    masks[1, 0, 0] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        counts = nms_device.intersections(torch.from_numpy(masks))
    np.testing.assert_array_equal(counts, [[4096, 4095], [4095, 4095]])


def test_nothing_to_keep_or_paint():
    empty = torch.zeros((0, 8, 9), dtype=torch.bool)
    nothing = np.zeros(0, np.int64)
    assert nms_device.mask_nms(empty, nothing, np.zeros(0, np.float32)).tolist() == []
    masks = torch.ones((2, 8, 9), dtype=torch.bool)
    only_background = nms_device.rasterize(masks, np.zeros(2, np.int64), np.ones(2, np.float32), (8, 9))
    np.testing.assert_array_equal(only_background, np.zeros((8, 9), np.int32))

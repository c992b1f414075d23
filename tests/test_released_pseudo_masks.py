"""The paper's released CorrCLIP pseudo masks, in the layout its code writes them
(``VOC2012/pseudo/corrclip/<id>.png``; ``COCO2014/pseudo/corrclip/train2014/<stem>.png``;
``.../pseudo/corrclip/{training,train}/<stem>.png`` for ADE20K and Cityscapes; 8-bit grayscale class
ids, ADE20K / Cityscapes as index + 1), read by the ``precomputed`` labeler on prepared fixtures
(docs/labelers.md gives the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scene_fixtures import make_cityscapes

import moduseg_core as ms
from moduseg_core.cli import main
from moduseg_core.files.io import read_image, read_mask

pytest.importorskip("pycocotools")
from test_prepare import make_coco, make_voc


def _release(mask: np.ndarray, path: Path) -> None:
    """A pseudo mask as the released code saves it: ``Image.fromarray(uint8)``, grayscale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def test_voc_release_through_evaluate_labels(coco_mini, tmp_path, capsys):
    voc, aug = make_voc(coco_mini, tmp_path / "download")
    out = tmp_path / "voc"
    assert main(["prepare", "voc", "--root", str(voc), "--out", str(out)]) == 0
    pseudo = voc / "pseudo" / "corrclip"
    train = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for i in train:  # the ground truth as the "released" masks: the labeler must score 100
        _release(read_mask(voc / "SegmentationClass" / f"{i}.png"), pseudo / f"{i}.png")
    capsys.readouterr()
    argv = ["evaluate-labels", "--dataset", "voc", "--set", f"dataset.root={out}", "--set", "bank_split=train",
            "--labeler", "precomputed", "--set", f"labeler.root={pseudo}", "--out", str(tmp_path / "scores")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "scores" / "labels_report.json").read_text())
    assert report["miou"] == 1.0 and report["dataset"]["images"] == len(train)
    assert "pseudo-mask mIoU 100.00 on 3 images of split 'train'" in capsys.readouterr().out


def test_coco_release_in_the_coco_layout(coco_mini, tmp_path):
    files = make_coco(coco_mini, tmp_path / "COCO2014")
    out = tmp_path / "coco"
    assert main(["prepare", "coco", "-a", str(files["train2014"]), "--images", str(tmp_path / "COCO2014" / "images"),
                 "--out", str(out)]) == 0
    ds = ms.get_component("dataset", "coco", root=out, split="train")
    pseudo = tmp_path / "COCO2014" / "pseudo" / "corrclip" / "train2014"
    rng = np.random.default_rng(0)
    written = {}
    for s in ds:  # ids such as COCO_train2014_000000000139: the released file names
        gt = read_mask(s.mask_path)
        noisy = np.where(rng.random(gt.shape) < 0.1, 0, gt)
        _release(noisy, pseudo / f"{s.id}.png")
        written[s.id] = noisy
    labeler = ms.get_component("labeler", "precomputed", root=pseudo)
    for s in ds:
        np.testing.assert_array_equal(labeler.label(read_image(s.image_path), s), written[s.id])


def test_cityscapes_release_named_by_image_stem(coco_mini, tmp_path, capsys):
    raw = make_cityscapes(coco_mini, tmp_path / "CityScapes")
    out = tmp_path / "cs"
    assert main(["prepare", "cityscapes", "--root", str(raw), "--out", str(out)]) == 0
    ds = ms.get_component("dataset", "cityscapes", root=out, split="train")
    pseudo = raw / "pseudo" / "corrclip" / "train"
    for s in ds:  # train id + 1, named after the image file: <city>_<seq>_<frame>_leftImg8bit.png
        _release(
            np.where(read_mask(s.mask_path) == 255, 1, read_mask(s.mask_path)), pseudo / f"{s.image_path.stem}.png"
        )
    sample = ds[0]
    image = read_image(sample.image_path)
    with pytest.raises(ms.ModusegError, match=r"does not exist.*labeler.file"):
        ms.get_component("labeler", "precomputed", root=pseudo).label(image, sample)
    labeler = ms.get_component("labeler", "precomputed", root=pseudo, file="{stem}.png", enforce_labels=False)
    expected = read_mask(pseudo / f"{sample.image_path.stem}.png")
    np.testing.assert_array_equal(labeler.label(image, sample), expected)
    with pytest.raises(ms.ModusegError, match=r"\{id\} or \{stem\}"):
        ms.get_component("labeler", "precomputed", root=pseudo, file="mask.png")

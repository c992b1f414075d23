"""Fixture datasets in ADE20K's and Cityscapes' official layouts, made from real coco-mini photos
(tests/test_prepare_scenes.py, tests/contract_builders.py). Not a test module."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from moduseg_core.files.io import read_mask

#: Cityscapes' label table as published (name, label id, train id; 255 = void), written out here
#: independently of moduseg_core.prepare.cityscapes
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]


def _ids(coco_mini: Path, n: int) -> list[str]:
    return (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:n]


def make_ade20k(coco_mini: Path, root: Path) -> Path:
    """ADEChallengeData2016: images/{training,validation}/ADE_*.jpg, annotations/.../ADE_*.png with
    0 = other and 1..150; coco-mini's class c becomes ADE id c (background → 0)."""
    ids = _ids(coco_mini, 6)
    for split, part, prefix in (("training", ids[:4], "ADE_train"), ("validation", ids[4:], "ADE_val")):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for k, i in enumerate(part, start=1):
            name = f"{prefix}_{k:08d}"
            shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", root / "images" / split / f"{name}.jpg")
            shutil.copy(coco_mini / "SegmentationClass" / f"{i}.png", root / "annotations" / split / f"{name}.png")
    (root / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n")
    return root


def make_cityscapes(coco_mini: Path, root: Path) -> Path:
    """leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png and gtFine/.../<id>_gtFine_labelIds.png
    (coco-mini class c → label id c mod 34: evaluated classes and void ones alike)."""
    ids = _ids(coco_mini, 5)
    for split, part, city in (("train", ids[:3], "aachen"), ("val", ids[3:], "frankfurt")):
        (root / "leftImg8bit" / split / city).mkdir(parents=True)
        (root / "gtFine" / split / city).mkdir(parents=True)
        for k, i in enumerate(part):
            stem = f"{city}_{k:06d}_000019"
            Image.open(coco_mini / "JPEGImages" / f"{i}.jpg").save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            )
            labels = (read_mask(coco_mini / "SegmentationClass" / f"{i}.png") % 34).astype(np.uint8)
            Image.fromarray(labels, mode="L").save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(labels, mode="L").save(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")
    return root

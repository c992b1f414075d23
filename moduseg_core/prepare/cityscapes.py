"""``moduseg prepare cityscapes``: leftImg8bit + gtFine (``*_gtFine_labelIds.png``) → the
``cityscapes`` plugin's train-id masks and labels.

::

    OUT/leftImg8bit                     → link to CITYSCAPES/leftImg8bit
    OUT/gtFine/<split>/<city>/<id>_gtFine_moduseg.png   train id t → t + 1 (1..19); void (train id
                                        255) → 255 (--void ignore, the official metric) or 0
                                        (--void background: class 0, scored)
    OUT/image_labels.json               id → sorted class ids of its mask
    OUT/moduseg_dataset.json            {"dataset": "cityscapes", "void": ...}: what the plugin checks
    OUT/prepare_summary.json

The label id → train id table is Cityscapes' own (cityscapesscripts' ``labels.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.io import read_mask, write_png
from moduseg_core.files.progress import progress
from moduseg_core.prepare.common import (
    DATASET_NOTE,
    LABELS,
    SplitSummary,
    begin_output,
    builtin_class_names,
    check_dir,
    finish_scene,
    link,
)

#: label id → train id of the 19 evaluated classes (every other label id is void)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
VOID = ("ignore", "background")
SPLITS = ("train", "val")
SUFFIX = "_gtFine_labelIds.png"


def lookup(void: str) -> np.ndarray:
    """label id (0..255) → ModuSeg class id (train id + 1; void → 255 or 0)."""
    table = np.full(256, 255 if void == "ignore" else 0, np.uint8)
    for label_id, train_id in TRAIN_IDS.items():
        table[label_id] = train_id + 1
    return table


def prepare_cityscapes(root: Path, out: Path, *, void: str = "ignore", overwrite: bool = False) -> dict[str, Any]:
    if void not in VOID:
        raise ModusegError(f"--void {void!r} is not allowed; use one of {', '.join(VOID)}")
    root = check_dir(root, "Cityscapes folder (holding leftImg8bit/ and gtFine/)", "--root")
    images = check_dir(root / "leftImg8bit", "Cityscapes folder (holding leftImg8bit/)", "--root")
    gt = check_dir(root / "gtFine", "Cityscapes folder (holding gtFine/)", "--root")
    jobs = []
    for split in SPLITS:
        if not (gt / split).is_dir():
            continue
        items = []
        for path in sorted((gt / split).glob(f"*/*{SUFFIX}")):
            image_id = path.name[: -len(SUFFIX)]
            image = images / split / path.parent.name / f"{image_id}_leftImg8bit.png"
            if not image.is_file():
                raise ModusegError(f"image {image} of {path.name} does not exist; check --root")
            items.append((image_id, path))
        if items:
            jobs.append((split, items))
    if not jobs:
        raise ModusegError(f"--root {root} has no gtFine/{{train,val}}/<city>/*{SUFFIX}; pass the Cityscapes folder")
    names = builtin_class_names("cityscapes")
    table = lookup(void)
    planned = ["leftImg8bit", *(f"gtFine/{s}/" for s, _ in jobs), LABELS, DATASET_NOTE, "prepare_summary.json"]
    output = begin_output(out, "prepare-cityscapes", planned, overwrite=overwrite)
    labels: dict[str, tuple[int, ...]] = {}
    summaries = []
    with output:
        link(images, out / "leftImg8bit")
        for split, items in jobs:
            summary = SplitSummary(split)
            for image_id, path in progress(items, total=len(items), desc=f"prepare cityscapes {split}"):
                raw = read_mask(path)
                if raw.min() < 0 or raw.max() > 255:
                    raise ModusegError(f"mask {path} holds values outside 0..255; pass *{SUFFIX} files")
                mask = table[raw]
                write_png(out / "gtFine" / split / path.parent.name / f"{image_id}_gtFine_moduseg.png", mask)
                labels[image_id] = summary.add(mask)
            summaries.append(summary)
        return finish_scene(out, output, dataset="cityscapes", root=root, option="void", value=void, names=names,
                            labels=labels, summaries=summaries)

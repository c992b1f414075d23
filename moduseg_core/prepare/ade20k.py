"""``moduseg prepare ade20k``: ADEChallengeData2016 → the ``ade20k`` plugin's masks and labels.

::

    OUT/images                          → link to ADEChallengeData2016/images
    OUT/annotations/{training,validation}/<id>.png   1..150 as in ADE20K; its 0 ("other") → 255
                                        (--unlabeled ignore, the official metric) or kept as 0
                                        (--unlabeled background: class 0, scored)
    OUT/image_labels.json               id → sorted class ids of its mask (both splits)
    OUT/moduseg_dataset.json            {"dataset": "ade20k", "unlabeled": ...}: what the plugin checks
    OUT/prepare_summary.json
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
    stems,
)

SPLITS = ("training", "validation")
UNLABELED = ("ignore", "background")


def prepare_ade20k(root: Path, out: Path, *, unlabeled: str = "ignore", overwrite: bool = False) -> dict[str, Any]:
    if unlabeled not in UNLABELED:
        raise ModusegError(f"--unlabeled {unlabeled!r} is not allowed; use one of {', '.join(UNLABELED)}")
    root = check_dir(root, "ADEChallengeData2016 folder (holding images/ and annotations/)", "--root")
    images = check_dir(root / "images", "ADEChallengeData2016 folder (holding images/)", "--root")
    splits = [s for s in SPLITS if (root / "annotations" / s).is_dir()]
    if not splits:
        raise ModusegError(
            f"--root {root} has no annotations/training or annotations/validation; pass ADEChallengeData2016"
        )
    jobs = []
    for split in splits:
        masks = stems(root / "annotations" / split, (".png",))
        jpegs = stems(images / split, (".jpg", ".jpeg", ".png")) if (images / split).is_dir() else {}
        missing = sorted(set(masks) - set(jpegs))
        if missing:
            raise ModusegError(
                f"image {images / split / (missing[0] + '.jpg')} does not exist ({len(missing)} of {len(masks)} "
                f"annotations of {split} have no image); check --root"
            )
        jobs.append((split, [masks[i] for i in sorted(masks)]))
    names = builtin_class_names("ade20k")
    planned = ["images", *(f"annotations/{s}/" for s in splits), LABELS, DATASET_NOTE, "prepare_summary.json"]
    output = begin_output(out, "prepare-ade20k", planned, overwrite=overwrite)
    labels: dict[str, tuple[int, ...]] = {}
    summaries = []
    zero = 255 if unlabeled == "ignore" else 0
    with output:
        link(images, out / "images")
        for split, paths in jobs:
            summary = SplitSummary(split)
            for path in progress(paths, total=len(paths), desc=f"prepare ade20k {split}"):
                raw = read_mask(path)
                if raw.min() < 0 or raw.max() > 150:
                    raise ModusegError(
                        f"mask {path} holds value {int(raw.max())}, outside ADE20K's 0..150; check --root"
                    )
                mask = raw.astype(np.uint8)
                mask[raw == 0] = zero
                write_png(out / "annotations" / split / path.name, mask)
                labels[path.stem] = summary.add(mask)
            summaries.append(summary)
        return finish_scene(out, output, dataset="ade20k", root=root, option="unlabeled", value=unlabeled, names=names,
                            labels=labels, summaries=summaries)

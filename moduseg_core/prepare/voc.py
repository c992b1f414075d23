"""``moduseg prepare voc``: PASCAL VOC 2012 (and SBD's ``SegmentationClassAug``) → a ``voc`` root with
image-level labels and the ``train_aug`` split.

::

    OUT/JPEGImages              → link to VOC2012/JPEGImages
    OUT/SegmentationClass       → link to VOC2012/SegmentationClass
    OUT/SegmentationClassAug    → link to --aug (when given; the voc plugin then reads its masks)
    OUT/ImageSets/Segmentation/{train,val,trainval}.txt   VOC's own lists, copied
    OUT/ImageSets/Segmentation/train_aug.txt              (with --aug) every Aug mask whose id is not in val
    OUT/image_labels.json       id → sorted class ids of the mask the voc plugin reads for it
    OUT/prepare_summary.json

The labels of an image are the classes of its mask except 0 and 255: of ``SegmentationClassAug``
when given and it holds the image (as the voc plugin then reads it), else of ``SegmentationClass``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.io import read_mask
from moduseg_core.files.progress import progress
from moduseg_core.prepare.common import (
    LABELS,
    SplitSummary,
    begin_output,
    builtin_class_names,
    check_dir,
    link,
    stems,
    write_labels,
    write_split,
    write_summary,
)

VOC_SPLITS = ("train", "val", "trainval")


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_voc(root: Path, out: Path, *, aug: Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    root = check_dir(root, "VOC2012 folder (holding JPEGImages/, SegmentationClass/, ImageSets/)", "--root")
    images = check_dir(root / "JPEGImages", "VOC2012 folder (holding JPEGImages/)", "--root")
    lists = check_dir(root / "ImageSets" / "Segmentation", "VOC2012 folder (holding ImageSets/Segmentation/)", "--root")
    gt_dir = check_dir(root / "SegmentationClass", "VOC2012 folder (holding SegmentationClass/)", "--root")
    aug_dir = check_dir(aug, "SegmentationClassAug folder of SBD", "--aug") if aug is not None else None
    splits: dict[str, list[str]] = {}
    for name in VOC_SPLITS:
        if (lists / f"{name}.txt").is_file():
            splits[name] = _read_ids(lists / f"{name}.txt")
    if "train" not in splits or "val" not in splits:
        raise ModusegError(f"--root {root}: {lists} lacks train.txt or val.txt; pass the VOC2012 folder of VOCdevkit")
    masks = stems(gt_dir, (".png",))
    aug_masks = stems(aug_dir, (".png",)) if aug_dir is not None else {}
    if aug_dir is not None:
        val = set(splits["val"])
        splits["train_aug"] = sorted(i for i in aug_masks if i not in val)
        if not splits["train_aug"]:
            raise ModusegError(f"--aug {aug_dir} holds no mask outside val; pass SBD's SegmentationClassAug folder")
    jpegs = stems(images, (".jpg", ".jpeg"))
    for name, ids in splits.items():
        source = aug_masks if name == "train_aug" else {**masks, **aug_masks}
        for i in ids:
            if i not in jpegs:
                raise ModusegError(f"image {images / (i + '.jpg')} of split {name} does not exist; check --root")
            if i not in source:
                raise ModusegError(
                    f"mask {gt_dir / (i + '.png')} of split {name} does not exist; check --root and --aug"
                )
    names = builtin_class_names("voc")
    planned = ["JPEGImages", "SegmentationClass", *(["SegmentationClassAug"] if aug_dir else [])]
    planned += [f"ImageSets/Segmentation/{s}.txt" for s in splits] + [LABELS, "prepare_summary.json"]
    output = begin_output(out, "prepare-voc", planned, overwrite=overwrite)
    labels: dict[str, tuple[int, ...]] = {}
    summaries = []
    with output:
        link(images, out / "JPEGImages")
        link(gt_dir, out / "SegmentationClass")
        if aug_dir is not None:
            link(aug_dir, out / "SegmentationClassAug")
        for name, ids in splits.items():
            summary = SplitSummary(name)
            for i in progress(ids, total=len(ids), desc=f"prepare voc {name}"):
                path = aug_masks.get(i) or masks[i]
                mask = read_mask(path)
                if mask.max() > 255 or mask.min() < 0:
                    raise ModusegError(f"mask {path} holds ids outside 0..255; VOC masks are 8-bit class ids")
                found = summary.add(mask.astype("uint8"))
                bad = [c for c in found if c >= len(names)]
                if bad:
                    raise ModusegError(
                        f"mask {path} holds class id {bad[0]}, outside 0..20 and 255; check --root / --aug"
                    )
                labels[i] = found
            write_split(out / "ImageSets" / "Segmentation" / f"{name}.txt", ids)
            summaries.append(summary)
        write_labels(out / LABELS, labels)
        result = {
            "dataset": "voc",
            "root": str(root),
            "aug": str(aug_dir) if aug_dir else None,
            "class_names": names,
            "splits": {s.name: s.as_dict(names) for s in summaries},
        }
        write_summary(out, result)
        output.finish()
    result["lines"] = [s.line(names) for s in summaries]
    return result

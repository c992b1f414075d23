"""``moduseg prepare coco``: COCO instance annotations (``instances_*.json``, 2014 or 2017) → the
layout of the ``coco`` dataset plugin.

::

    OUT/images/<split>                  → link to the folder holding the split's images
    OUT/SegmentationClass/<split>/<stem>.png   0 background, 1..K categories in id order, 255 ignore
    OUT/ImageSets/Segmentation/<split>.txt     the image stems written, one a line
    OUT/image_labels.json               stem → sorted class ids present in its mask (every split)
    OUT/classes.txt                     background, then the category names in id order
    OUT/prepare_summary.json

``<split>`` is the annotation file's name without ``instances_`` (``train2014``, ``val2017``...);
``<stem>`` is the image's ``file_name`` without suffix. Masks are rasterised with pycocotools
(polygons, uncompressed and compressed RLE, exactly as its ``annToMask`` does) and painted in a
fixed order: crowd regions first (their class, or 255 with ``crowd="ignore"``), then the other
instances over them, in file order (``overlap="order"``: a later annotation wins) or from the
largest to the smallest (``overlap="area"``: a smaller instance stays visible on a larger one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.progress import note, progress
from moduseg_core.files.writing import write_png, write_text
from moduseg_core.prepare.common import (
    LABELS,
    SplitSummary,
    begin_output,
    check_dir,
    check_file,
    link,
    write_labels,
    write_split,
    write_summary,
)

CROWD = ("class", "ignore")
OVERLAP = ("order", "area")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_name(path: Path) -> str:
    """``instances_train2014.json`` → ``train2014`` (any other name: its stem)."""
    match = re.fullmatch(r"instances_(.+)", path.stem)
    return match.group(1) if match else path.stem


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModusegError(f"--annotations {path} is not valid JSON ({exc}); pass an instances_*.json file") from exc
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise ModusegError(
            f"--annotations {path} lacks the lists images, annotations and categories; pass a COCO instances_*.json "
            "file (captions_* and person_keypoints_* files have no segmentation of every category)"
        )
    return data


def category_table(categories: list[dict[str, Any]], path: Path) -> tuple[dict[int, int], list[str]]:
    """category id → class id (1..K by ascending category id) and the class names (background first)."""
    cats = sorted(categories, key=lambda c: c["id"])
    if not cats or len(cats) > 254:
        raise ModusegError(f"--annotations {path} has {len(cats)} categories; a class mask holds 1 to 254 classes")
    return {c["id"]: i + 1 for i, c in enumerate(cats)}, ["background", *(str(c["name"]) for c in cats)]


def _image_folder(images: Path, split: str, file_names: list[str]) -> Path:
    """The folder that holds the split's files: ``images/<split>`` or ``images`` itself."""
    candidates = [images / split, images] if (images / split).is_dir() else [images]
    for folder in candidates:
        present = {p.name for p in folder.iterdir()}
        missing = [n for n in file_names if n not in present]
        if not missing:
            return folder
    raise ModusegError(
        f"image {candidates[0] / missing[0]} does not exist ({len(missing)} of {len(file_names)} images of "
        f"{split} are missing); pass --images the folder that holds {split}/ or the split's images themselves"
    )


def rle_of(mask_api: Any, segmentation: Any, height: int, width: int) -> Any:
    """One annotation's segmentation as an RLE, the way pycocotools' ``annToRLE`` reads it."""
    if isinstance(segmentation, list):  # polygons (one object may have several parts)
        return mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_api.frPyObjects(segmentation, height, width)
    return segmentation  # compressed RLE


def rasterise(
    mask_api: Any,
    image: dict[str, Any],
    anns: list[dict[str, Any]],
    classes: dict[int, int],
    *,
    crowd: str,
    overlap: str,
) -> tuple[np.ndarray, dict[str, int]]:
    """One image's class mask (uint8) and counts (crowd regions, empty annotations skipped)."""
    h, w = int(image["height"]), int(image["width"])
    out = np.zeros((h, w), np.uint8)
    counts = {"crowd_regions": 0, "empty_annotations": 0}
    regions: list[tuple[int, np.ndarray, bool]] = []
    for ann in anns:
        seg = ann.get("segmentation")
        if not seg:
            counts["empty_annotations"] += 1
            continue
        try:
            rle = rle_of(mask_api, seg, h, w)
            binary = mask_api.decode(rle).astype(bool)
        except Exception as exc:  # pycocotools raises bare Exceptions for malformed input
            raise ModusegError(
                f"annotation {ann.get('id')!r} of image {image.get('file_name')!r} has a segmentation pycocotools "
                f"cannot read ({exc}); fix or remove that annotation"
            ) from exc
        regions.append((classes[ann["category_id"]], binary, bool(ann.get("iscrowd", 0))))
    for cls, binary, is_crowd in regions:
        if is_crowd:
            out[binary] = 255 if crowd == "ignore" else cls
            counts["crowd_regions"] += 1
    things = [(cls, binary) for cls, binary, is_crowd in regions if not is_crowd]
    if overlap == "area":
        things.sort(key=lambda item: -int(item[1].sum()))  # stable: equal areas keep file order
    for cls, binary in things:
        out[binary] = cls
    return out, counts


def prepare_coco(
    annotations: list[Path],
    images: Path,
    out: Path,
    *,
    crowd: str = "class",
    overlap: str = "order",
    keep_empty: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the ``coco`` layout for every annotation file into ``out``; returns the summary."""
    from pycocotools import mask as mask_api  # checked importable by the caller

    if crowd not in CROWD:
        raise ModusegError(f"--crowd {crowd!r} is not allowed; use one of {', '.join(CROWD)}")
    if overlap not in OVERLAP:
        raise ModusegError(f"--overlap {overlap!r} is not allowed; use one of {', '.join(OVERLAP)}")
    if not annotations:
        raise ModusegError("no --annotations given; pass one or more instances_*.json files")
    files = [check_file(a, "instances_*.json file", "--annotations") for a in annotations]
    images = check_dir(images, "folder of COCO images (holding train2014/ or the images themselves)", "--images")
    splits = [split_name(f) for f in files]
    if len(set(splits)) != len(splits):
        raise ModusegError(f"--annotations name the split {splits[0]!r} twice; pass each instances_*.json once")
    jobs = []
    class_names: list[str] | None = None
    for path, split in zip(files, splits, strict=True):
        note(f"reading {path}")
        data = _load(path)
        table, names = category_table(data["categories"], path)
        if class_names is not None and names != class_names:
            raise ModusegError(f"--annotations {path} has other categories than {files[0]}; prepare them separately")
        class_names = names
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            if ann.get("category_id") not in table:
                raise ModusegError(
                    f"--annotations {path}: annotation {ann.get('id')!r} has category_id {ann.get('category_id')!r}, "
                    "which is not among its categories; fix the file"
                )
            by_image.setdefault(ann["image_id"], []).append(ann)
        chosen = sorted(
            (img for img in data["images"] if keep_empty or by_image.get(img["id"])), key=lambda img: img["file_name"]
        )
        folder = _image_folder(images, split, [img["file_name"] for img in chosen])
        jobs.append((split, folder, chosen, by_image, table, len(data["images"]) - len(chosen)))
    assert class_names is not None
    planned = [f"images/{s}" for s in splits] + [f"SegmentationClass/{s}/" for s in splits]
    planned += [f"ImageSets/Segmentation/{s}.txt" for s in splits] + [LABELS, "classes.txt", "prepare_summary.json"]
    output = begin_output(out, "prepare-coco", planned, overwrite=overwrite)
    labels: dict[str, tuple[int, ...]] = {}
    summaries = []
    with output:
        for split, folder, chosen, by_image, table, left_out in jobs:
            summary = SplitSummary(split, left_out=left_out)
            summary.notes = {"crowd_regions": 0, "empty_annotations": 0}
            link(folder, out / "images" / split)
            stems = []
            for img in progress(chosen, total=len(chosen), desc=f"prepare coco {split}"):
                mask, counts = rasterise(
                    mask_api, img, by_image.get(img["id"], []), table, crowd=crowd, overlap=overlap
                )
                stem = Path(img["file_name"]).stem
                write_png(out / "SegmentationClass" / split / f"{stem}.png", mask)
                labels[stem] = summary.add(mask)
                for key, n in counts.items():
                    summary.count(key, n)
                stems.append(stem)
            write_split(out / "ImageSets" / "Segmentation" / f"{split}.txt", stems)
            summaries.append(summary)
        write_labels(out / LABELS, labels)
        write_text(out / "classes.txt", "".join(f"{n}\n" for n in class_names))
        result = {
            "dataset": "coco",
            "annotations": [str(f) for f in files],
            "crowd": crowd,
            "overlap": overlap,
            "keep_empty": keep_empty,
            "class_names": class_names,
            "splits": {s.name: s.as_dict(class_names) for s in summaries},
        }
        write_summary(out, result)
        output.finish()
    result["lines"] = [s.line(class_names) for s in summaries]
    return result

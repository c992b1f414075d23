"""Scene-parsing datasets without a background class: ``ade20k`` (ADEChallengeData2016 layout) and
``cityscapes`` (leftImg8bit / gtFine layout, the 19 train ids).

Class ids follow ModuSeg's convention, 0 = background, 1..C = the dataset's classes in their
official order (ADE20K's 1..150 as in its annotations; Cityscapes' train id t as t + 1), 255 ignore.
Neither dataset has a background class: their unlabelled pixels (ADE20K's 0 "other", Cityscapes'
void train id 255) are ignored by the official metric. So by default (``unlabeled`` / ``void`` =
``ignore``) no mask holds 0, the dataset says ``has_background = False`` and class 0 is left out
of the mIoU; ``background`` instead reads those pixels as class 0, which then is scored like any
class (not the official metric). How the method's background rules apply: docs/datasets.md.

The masks in ModuSeg's convention come from ``moduseg prepare ade20k|cityscapes``, which records
its choice in ``moduseg_dataset.json``; a root and an option that disagree are refused. ADE20K's
raw annotations can be read without preparing with ``unlabeled=background`` (their 0 is then
background as it stands).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from moduseg_core import ModusegError, Options

from ._files import (
    FROM_MASKS,
    IMAGE_SUFFIXES,
    FileDataset,
    _attach,
    _check_dir,
    _check_root,
    _check_split_name,
    _index_dir,
)
from ._labels import _resolve, load_class_names

#: written by ``moduseg prepare ade20k|cityscapes`` beside the masks it made
DATASET_NOTE = "moduseg_dataset.json"
ADE_SPLITS = {"train": "training", "val": "validation"}
#: the mask file of a Cityscapes image ``<id>_leftImg8bit.png`` written by ``moduseg prepare cityscapes``
CITYSCAPES_MASK = "{id}_gtFine_moduseg.png"


class _SceneOptions(Options):
    @field_validator("split", check_fields=False)
    @classmethod
    def _plain_split(cls, value: str) -> str:
        return _check_split_name(value)


def _read_note(root: Path) -> dict | None:
    path = root / DATASET_NOTE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModusegError(f"{path} is unreadable ({exc}); rerun `moduseg prepare` into {root}") from exc
    return data if isinstance(data, dict) else None


def _labels_file(root: Path, value: str | None) -> Path | None:
    if value == FROM_MASKS:
        return None
    if value is not None:
        return _resolve(root, value)
    return root / "image_labels.json" if (root / "image_labels.json").is_file() else None


# --------------------------------------------------------------------------- ade20k


class Ade20kOptions(_SceneOptions):
    root: Path = Field(
        ..., description="output of `moduseg prepare ade20k` (or ADEChallengeData2016 with unlabeled=background)"
    )
    split: str = Field("train", description="train (→ training), val (→ validation), or a folder name under images/")
    unlabeled: Literal["ignore", "background"] = Field(
        "ignore",
        description="ADE20K's 0 ('other'): ignore = 255, not scored, no background class (official metric; needs "
        "`moduseg prepare ade20k`); background = class 0, scored",
    )
    image_dir: str = Field("images", description="folder under root holding one sub-folder per split")
    mask_dir: str = Field("annotations", description="folder under root holding one mask sub-folder per split")
    labels_file: str | None = Field(
        None, description="image-level labels; unset = image_labels.json under root if present, else from the masks"
    )


def make_ade20k(options: Ade20kOptions) -> FileDataset:
    """ADEChallengeData2016: ``images/{training,validation}/*.jpg``, ``annotations/{...}/*.png``;
    150 classes (``classes=ade20k``)."""
    root = _check_root(options.root, "ade20k")
    note = _read_note(root)
    prepared = note.get("unlabeled") if note and note.get("dataset") == "ade20k" else None
    if options.unlabeled == "ignore" and prepared != "ignore":
        found = (
            f"was prepared with --unlabeled {prepared}" if prepared else "holds ADE20K's raw annotations (0 = other)"
        )
        raise ModusegError(
            f"ade20k root {root} {found}; for unlabeled=ignore run `moduseg prepare ade20k --root {root} --out DIR` "
            "and set dataset.root=DIR, or set dataset.unlabeled=background to score 0 as a background class"
        )
    if options.unlabeled == "background" and prepared == "ignore":
        raise ModusegError(
            f"ade20k root {root} was prepared with --unlabeled ignore (its masks hold 255, not 0); set "
            "dataset.unlabeled=ignore, or point dataset.root at the raw ADEChallengeData2016 folder"
        )
    names, desc = load_class_names("ade20k")
    folder = ADE_SPLITS.get(options.split, options.split)
    images = _check_dir(
        _resolve(root, options.image_dir) / folder, f"ade20k split {options.split!r} image folder", "split"
    )
    masks = _check_dir(
        _resolve(root, options.mask_dir) / folder, f"ade20k split {options.split!r} mask folder", "mask_dir"
    )
    ids = sorted(_index_dir(masks, (".png",)))
    labels_file = _labels_file(root, options.labels_file)
    return FileDataset(
        name="ade20k",
        root=root,
        split=options.split,
        class_names=names,
        classes_desc=desc,
        entries=_attach("ade20k", options.split, ids, images, masks) if ids else [],
        labels_file=labels_file,
        derive_from_masks=labels_file is None,
        has_background=options.unlabeled == "background",
    )


# --------------------------------------------------------------------------- cityscapes


class CityscapesOptions(_SceneOptions):
    root: Path = Field(
        ..., description="output of `moduseg prepare cityscapes` (leftImg8bit/, gtFine/ with train-id masks)"
    )
    split: str = Field("train", description="train, val, or another folder under leftImg8bit/")
    void: Literal["ignore", "background"] = Field(
        "ignore",
        description="void pixels (train id 255): ignore = not scored, no background class (official metric); "
        "background = class 0, scored; must match `moduseg prepare cityscapes --void`",
    )
    labels_file: str | None = Field(
        None, description="image-level labels; unset = image_labels.json under root if present, else from the masks"
    )


def make_cityscapes(options: CityscapesOptions) -> FileDataset:
    """Cityscapes: ``leftImg8bit/<split>/<city>/<id>_leftImg8bit.png`` with the masks
    ``gtFine/<split>/<city>/<id>_gtFine_moduseg.png`` of ``moduseg prepare cityscapes`` (train id + 1)."""
    root = _check_root(options.root, "cityscapes")
    note = _read_note(root)
    prepared = note.get("void") if note and note.get("dataset") == "cityscapes" else None
    if prepared is None:
        raise ModusegError(
            f"cityscapes root {root} was not written by `moduseg prepare cityscapes` (gtFine's labelIds are not "
            f"train ids); run `moduseg prepare cityscapes --root {root} --out DIR` and set dataset.root=DIR"
        )
    if prepared != options.void:
        raise ModusegError(
            f"cityscapes root {root} was prepared with --void {prepared}, but dataset.void is {options.void!r}; set "
            f"dataset.void={prepared} or prepare again with --void {options.void}"
        )
    names, desc = load_class_names("cityscapes")
    images = _check_dir(
        root / "leftImg8bit" / options.split, f"cityscapes split {options.split!r} image folder", "split"
    )
    entries: list[tuple[str, Path, Path | None]] = []
    for city in sorted(p for p in images.iterdir() if p.is_dir()):
        for path in sorted(city.iterdir()):
            stem, suffix = os.path.splitext(path.name)
            if suffix.lower() not in IMAGE_SUFFIXES or not stem.endswith("_leftImg8bit"):
                continue
            image_id = stem[: -len("_leftImg8bit")]
            mask = root / "gtFine" / options.split / city.name / CITYSCAPES_MASK.format(id=image_id)
            if not mask.is_file():
                raise ModusegError(
                    f"mask {mask} does not exist; rerun `moduseg prepare cityscapes` for split {options.split!r}"
                )
            entries.append((image_id, path, mask))
    labels_file = _labels_file(root, options.labels_file)
    return FileDataset(
        name="cityscapes",
        root=root,
        split=options.split,
        class_names=names,
        classes_desc=desc,
        entries=entries,
        labels_file=labels_file,
        derive_from_masks=labels_file is None,
        has_background=options.void == "background",
    )

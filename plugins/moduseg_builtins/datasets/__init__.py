"""Datasets: ``voc`` (PASCAL VOC layout), ``coco`` (the paper's COCO-2014 layout), ``folder``, and
``ade20k`` / ``cityscapes`` (scene parsing without a background class, in ``scenes``).

Every dataset yields :class:`~moduseg_core.contract.types.Sample` items with image-level labels
(sorted foreground class ids, 1-based). Labels come from a labels file when one is given
or found, else they are derived from the ground-truth masks: the unique class ids of each
mask except background (0) and ignore (255). That is how PASCAL VOC's image-level labels
(the ``cls_labels.npy`` of WSSS repositories) are usually produced, so both give the same
result on the same masks.

Construction validates what is cheap to check (the root, the split list, the labels file,
that every image file exists); reading a corrupt image fails later in ``read_image`` with
the file's path. Labels derived from masks are computed on first use (iteration or
``fingerprint()``), since that reads every mask of the split.

Only the standard library, numpy and pydantic are imported here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from moduseg_core import ModusegError, Options, hookimpl

from ._files import (
    COCO_SPLITS,
    FROM_MASKS,
    IMAGE_SUFFIXES,
    FileDataset,
    _attach,
    _check_dir,
    _check_root,
    _check_split_name,
    _index_dir,
    _read_split_file,
)
from ._labels import _resolve, load_class_names
from .scenes import Ade20kOptions, CityscapesOptions, make_ade20k, make_cityscapes

# --------------------------------------------------------------------------- voc


class _SplitOptions(Options):
    @field_validator("split", check_fields=False)
    @classmethod
    def _plain_split(cls, value: str) -> str:
        return _check_split_name(value)


class VocOptions(_SplitOptions):
    root: Path = Field(..., description="dataset root (holds JPEGImages/, ImageSets/, SegmentationClass*/)")
    split: str = Field("train", description="split name; the ids are read from ImageSets/Segmentation/{split}.txt")
    image_dir: str = Field("JPEGImages", description="image folder under root")
    mask_dir: str | None = Field(
        None, description="GT mask folder under root; unset = SegmentationClassAug if present, else SegmentationClass"
    )
    split_file: str | None = Field(
        None, description="id list (relative to root or absolute); default ImageSets/Segmentation/{split}.txt"
    )
    labels_file: str | None = Field(
        None,
        description="image-level labels (.json/.npy/.csv, docs/formats.md); unset = image_labels.json under root "
        "if present, else derived from the masks; 'masks' = always derive from the masks",
    )
    classes: str = Field("voc", description="class names: voc, coco, or a txt file (one a line, background first)")


def make_voc(options: VocOptions) -> FileDataset:
    """PASCAL VOC layout. Labels: labels_file, else ``image_labels.json`` under root, else from the GT masks
    (unique ids except 0 and 255: how VOC's image-level labels are usually produced)."""
    root = _check_root(options.root, "voc")
    names, desc = load_class_names(options.classes, root)
    split_file = _resolve(root, options.split_file or f"ImageSets/Segmentation/{options.split}.txt")
    ids = _read_split_file(split_file)
    image_dir = _check_dir(_resolve(root, options.image_dir), "image folder", "image_dir")
    if options.mask_dir is not None:
        mask_dir: Path | None = _check_dir(_resolve(root, options.mask_dir), "mask folder", "mask_dir")
    elif (root / "SegmentationClassAug").is_dir():
        mask_dir = root / "SegmentationClassAug"
    elif (root / "SegmentationClass").is_dir():
        mask_dir = root / "SegmentationClass"
    else:
        mask_dir = None
    entries = _attach("voc", options.split, ids, image_dir, mask_dir) if ids else []
    if options.labels_file == FROM_MASKS:
        labels_file: Path | None = None
    elif options.labels_file is not None:
        labels_file = _resolve(root, options.labels_file)
    elif (root / "image_labels.json").is_file():
        labels_file = root / "image_labels.json"
    else:
        labels_file = None
    return FileDataset(
        name="voc",
        root=root,
        split=options.split,
        class_names=names,
        classes_desc=desc,
        entries=entries,
        labels_file=labels_file,
        derive_from_masks=labels_file is None,
    )


# --------------------------------------------------------------------------- coco


class CocoOptions(_SplitOptions):
    root: Path = Field(..., description="COCO-2014 root with images/{train2014,val2014}/ and SegmentationClass/{...}/")
    split: str = Field("train", description="train (→ train2014), val (→ val2014), or a folder name under images/")
    image_dir: str = Field("images", description="folder under root holding one sub-folder per split")
    mask_dir: str = Field("SegmentationClass", description="folder under root holding one mask sub-folder per split")
    split_file: str | None = Field(
        None, description="id list (relative to root or absolute); default: the mask PNG stems"
    )
    labels_file: str | None = Field(
        None, description="image-level labels (.json/.npy/.csv); unset or 'masks' = derived from the masks"
    )
    classes: str = Field("coco", description="class names: coco, voc, or a txt file (one a line, background first)")


def make_coco(options: CocoOptions) -> FileDataset:
    """The paper's COCO-2014 layout: ``images/{train2014,val2014}/*.jpg`` and
    ``SegmentationClass/{train2014,val2014}/*.png`` (0 = background, 1..80, 255 ignore)."""
    root = _check_root(options.root, "coco")
    names, desc = load_class_names(options.classes, root)
    images_root = _check_dir(_resolve(root, options.image_dir), "image folder", "image_dir")
    folder = COCO_SPLITS.get(options.split, options.split)
    if not (images_root / folder).is_dir():
        allowed = sorted(set(COCO_SPLITS) | {p.name for p in images_root.iterdir() if p.is_dir()})
        raise ModusegError(
            f"coco split {options.split!r}: image folder {images_root / folder} does not exist; allowed splits: "
            f"{', '.join(allowed)}"
        )
    image_dir = images_root / folder
    mask_dir = _resolve(root, options.mask_dir) / folder
    if options.split_file is not None:
        ids = _read_split_file(_resolve(root, options.split_file))
    elif mask_dir.is_dir():
        ids = sorted(_index_dir(mask_dir, (".png",)))
    else:
        ids = sorted(_index_dir(image_dir, IMAGE_SUFFIXES))
    entries = _attach("coco", options.split, ids, image_dir, mask_dir) if ids else []
    labels_file = _resolve(root, options.labels_file) if options.labels_file not in (None, FROM_MASKS) else None
    if labels_file is None and not mask_dir.is_dir():
        raise ModusegError(
            f"coco split {options.split!r} has no labels: mask folder {mask_dir} does not exist and labels_file is "
            "unset; add the masks or set labels_file"
        )
    return FileDataset(
        name="coco",
        root=root,
        split=options.split,
        class_names=names,
        classes_desc=desc,
        entries=entries,
        labels_file=labels_file,
        derive_from_masks=labels_file is None,
    )


# --------------------------------------------------------------------------- folder


class FolderOptions(_SplitOptions):
    root: Path = Field(..., description="folder holding images/ and optionally masks/ and labels.json or labels.csv")
    split: str = Field("all", description="all = every image; another name reads the ids from {root}/{split}.txt")
    image_dir: str = Field("images", description="image folder under root (any of .jpg .png ...; one file per id)")
    mask_dir: str = Field("masks", description="GT mask folder under root ({id}.png); optional")
    split_file: str | None = Field(None, description="id list (relative to root or absolute); overrides split")
    labels_file: str | None = Field(
        None,
        description="image-level labels; unset = labels.json or labels.csv under root if present, else derived "
        "from the masks if present, else none; 'masks' = always derive from the masks",
    )
    classes: str | None = Field(
        None, description="voc, coco, or a txt file; unset = classes.txt under root if present, else voc"
    )


def make_folder(options: FolderOptions) -> FileDataset:
    """A plain folder of images. Labels: labels_file, else ``labels.json``/``labels.csv`` under root, else
    derived from ``masks/`` (unique ids except 0 and 255), else none (fine for prediction, not for a bank)."""
    root = _check_root(options.root, "folder")
    classes = options.classes
    if classes is None:
        classes = "classes.txt" if (root / "classes.txt").is_file() else "voc"
    names, desc = load_class_names(classes, root)
    image_dir = _check_dir(_resolve(root, options.image_dir), "image folder", "image_dir")
    if options.split_file is not None:
        ids = _read_split_file(_resolve(root, options.split_file))
    elif options.split != "all":
        ids = _read_split_file(root / f"{options.split}.txt")
    else:
        ids = sorted(_index_dir(image_dir, IMAGE_SUFFIXES, strict=True))
    mask_dir = _resolve(root, options.mask_dir)
    entries = (
        _attach("folder", options.split, ids, image_dir, mask_dir, partial_masks_ok=True, strict_images=True)
        if ids
        else []
    )
    if options.labels_file == FROM_MASKS:
        labels_file: Path | None = None
    elif options.labels_file is not None:
        labels_file = _resolve(root, options.labels_file)
    else:
        labels_file = next((root / n for n in ("labels.json", "labels.csv") if (root / n).is_file()), None)
    derive = options.labels_file == FROM_MASKS or labels_file is None and any(m is not None for _, _, m in entries)
    return FileDataset(
        name="folder",
        root=root,
        split=options.split,
        class_names=names,
        classes_desc=desc,
        entries=entries,
        labels_file=labels_file,
        derive_from_masks=derive,
    )


@hookimpl
def register_datasets(register):
    register(
        "voc", make_voc, options=VocOptions, summary="PASCAL VOC layout (JPEGImages, ImageSets, SegmentationClass*)"
    )
    register(
        "coco",
        make_coco,
        options=CocoOptions,
        summary="COCO-2014 layout (images/train2014, SegmentationClass/train2014)",
    )
    register(
        "folder", make_folder, options=FolderOptions, summary="A folder of images, optional masks/ and labels file"
    )
    register(
        "ade20k",
        make_ade20k,
        options=Ade20kOptions,
        summary="ADEChallengeData2016 layout (images/, annotations/), 150 classes, no background class",
    )
    register(
        "cityscapes",
        make_cityscapes,
        options=CityscapesOptions,
        summary="Cityscapes leftImg8bit/ + gtFine/ (moduseg prepare cityscapes), 19 train ids, no background class",
    )

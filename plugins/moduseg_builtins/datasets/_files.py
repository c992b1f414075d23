"""The dataset class of the file-based datasets (``voc``, ``coco``, ``folder``): split lists,
image/mask indexing and the checks on a dataset's folders. Class lists and label tables are in ``_labels``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from moduseg_core import ModusegError
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import IMAGE_SUFFIXES

from ._labels import LabelTable, _read_text, labels_from_mask

COCO_SPLITS = {"train": "train2014", "val": "val2014"}
#: ``labels_file="masks"`` derives the labels from the GT masks even when a labels file is present.
FROM_MASKS = "masks"


def _read_split_file(path: Path) -> list[str]:
    """One id a line; blank lines and ``#`` comments skipped. Lines such as
    ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png`` give the first file's stem."""
    if not path.is_file():
        raise ModusegError(
            f"split file {path} does not exist; check root and split, or set split_file to a list of image ids"
        )
    ids: list[str] = []
    seen: set[str] = set()
    for line in _read_text(path, "split file").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token = line.split()[0]
        if "/" in token or "\\" in token or Path(token).suffix.lower() in IMAGE_SUFFIXES:
            token = Path(token.replace("\\", "/")).stem
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def _index_dir(folder: Path, suffixes: tuple[str, ...], *, strict: bool = False) -> dict[str, Path]:
    """stem → file for the files of ``folder`` with one of ``suffixes`` (earlier suffixes win).

    ``strict``: two files with the same stem (``a.jpg``, ``a.png``) are an error.
    """
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(suffixes)}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            suffix = suffix.lower()
            if suffix not in rank or entry.name.startswith(".") or not entry.is_file():
                continue
            path = Path(entry.path)
            old = found.get(stem)
            if old is not None:
                if strict:
                    raise ModusegError(
                        f"image id {stem!r} is ambiguous: both {old} and {path} exist in {folder}; "
                        "keep one file per id"
                    )
                if rank[old.suffix.lower()] <= rank[suffix]:
                    continue
            found[stem] = path
    return found


class FileDataset:
    """A list of samples with image-level labels; what every built-in dataset builds.

    Attributes: ``class_names`` (index 0 = background), ``split``, ``root``, ``labels_source``
    (the labels file, ``"masks"`` or ``"none"``), ``has_background`` (False for datasets whose masks
    never hold class 0, such as ade20k and cityscapes by default).
    """

    def __init__(
        self,
        *,
        name: str,
        root: Path,
        split: str,
        class_names: list[str],
        classes_desc: str,
        entries: list[tuple[str, Path, Path | None]],
        labels_file: Path | None,
        derive_from_masks: bool,
        has_background: bool = True,
    ):
        self.name = name
        #: whether class 0 is a class of the ground truth (False: no mask holds 0, and 0 is not scored)
        self.has_background = has_background
        self.root = root
        self.split = split
        self.class_names = list(class_names)
        self.classes_desc = classes_desc
        if not entries:
            raise ModusegError(
                f"dataset {name!r} split {split!r} has no samples (root {root}); check the split list and the "
                "image folder"
            )
        self._entries = entries
        self._samples: list[Sample] | None = None
        self._derived: dict[int, Sample] | None = None  # samples made one by one before ``samples`` was read
        self._by_id: dict[str, int] | None = None
        if labels_file is not None:
            table = LabelTable(labels_file, self.class_names, classes_desc)
            labels = table.for_ids([e[0] for e in entries])
            self.labels_source = str(labels_file)
            self._samples = [Sample(i, img, labels[i], mask) for i, img, mask in entries]
        elif derive_from_masks:
            missing = [m for _, _, m in entries if m is None]
            if missing:
                first = next(i for i, _, m in entries if m is None)
                raise ModusegError(
                    f"dataset {name!r} split {split!r}: image {first!r} has no mask to derive its labels from "
                    f"({len(missing)} of {len(entries)} without masks); give labels_file= or add the masks"
                )
            self.labels_source = "masks"
        else:
            self.labels_source = "none"
            self._samples = [Sample(i, img, (), mask) for i, img, mask in entries]

    @property
    def samples(self) -> list[Sample]:
        """Every sample; labels derived from masks read every mask of the split (once)."""
        if self._samples is None:
            self._samples = [self._sample(k) for k in range(len(self._entries))]
        return self._samples

    def _sample(self, index: int) -> Sample:
        """One sample; its labels are derived from its mask only (the others are not read)."""
        if self._samples is not None:
            return self._samples[index]
        if self._derived is None:
            self._derived = {}
        if index not in self._derived:
            i, img, mask = self._entries[index]
            self._derived[index] = Sample(i, img, labels_from_mask(mask, self.class_names, self.classes_desc), mask)
        return self._derived[index]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        return [e[0] for e in self._entries]

    @property
    def has_masks(self) -> bool:
        return all(e[2] is not None for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Sample]:
        """Samples in order, each made when reached: ``itertools.islice(dataset, n)`` (``--limit``)
        reads only the first n masks when labels come from the masks."""
        for k in range(len(self._entries)):
            yield self._sample(k)

    def __getitem__(self, index: int) -> Sample:
        return self._sample(range(len(self._entries))[index])

    def by_id(self, image_id: str) -> Sample:
        if self._by_id is None:
            self._by_id = {e[0]: k for k, e in enumerate(self._entries)}
        if image_id not in self._by_id:
            raise ModusegError(f"dataset {self.name!r} split {self.split!r} has no image {image_id!r}")
        return self._sample(self._by_id[image_id])

    def fingerprint(self, samples: list[Sample] | None = None) -> str:
        """Short sha256 of (class names, split, sorted ids with their labels): changes when any of them does.
        ``samples``: only these (the first n of a ``--limit``), so that the other masks are not read."""
        payload = {
            "classes": self.class_names,
            "split": self.split,
            "samples": sorted([s.id, list(s.labels)] for s in (self.samples if samples is None else samples)),
        }
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={len(self.class_names)}, root={str(self.root)!r})"
        )


def _check_root(root: Path, name: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ModusegError(
            f"dataset {name!r} root {root} does not exist or is not a folder; set --set dataset.root=<folder>"
        )
    return root


def _check_dir(path: Path, what: str, option: str) -> Path:
    if not path.is_dir():
        raise ModusegError(f"{what} {path} does not exist or is not a folder; check root and the {option} option")
    return path


def _attach(
    name: str,
    split: str,
    ids: list[str],
    image_dir: Path,
    mask_dir: Path | None,
    *,
    partial_masks_ok: bool = False,
    strict_images: bool = False,
) -> list[tuple[str, Path, Path | None]]:
    images = _index_dir(image_dir, IMAGE_SUFFIXES, strict=strict_images)
    missing = [i for i in ids if i not in images]
    if missing:
        raise ModusegError(
            f"image {image_dir / (missing[0] + '.jpg')} does not exist ({len(missing)} of {len(ids)} images of "
            f"dataset {name!r} split {split!r} are missing); check root, image_dir and the split list"
        )
    masks: dict[str, Path] = {}
    if mask_dir is not None and mask_dir.is_dir():
        masks = _index_dir(mask_dir, (".png",))
        absent = [i for i in ids if i not in masks]
        if absent and len(absent) < len(ids) and not partial_masks_ok:
            raise ModusegError(
                f"mask {mask_dir / (absent[0] + '.png')} does not exist ({len(absent)} of {len(ids)} masks of "
                f"split {split!r} are missing); point mask_dir at the folder with this split's masks"
            )
    return [(i, images[i], masks.get(i)) for i in ids]


def _check_split_name(split: str) -> str:
    if not split or "/" in split or "\\" in split or split in (".", ".."):
        raise ValueError("split must be a plain name such as train or val (use split_file for a path)")
    return split

"""Class lists and image-level label tables of the file-based datasets (numpy only).

``load_class_names`` reads a dataset's class names (built-in ``voc``/``coco`` or a text file,
background first); ``LabelTable`` reads a labels file (json, csv, or npy, including the
pickled ``cls_labels.npy`` dicts of WSSS repositories) into per-image class ids; ``labels_from_mask``
derives them from a ground-truth mask.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core import ModusegError
from moduseg_core.contract.errors import did_you_mean
from moduseg_core.contract.types import IGNORE_INDEX
from moduseg_core.files.io import IMAGE_SUFFIXES, read_mask

HERE = Path(__file__).resolve().parent
BUILTIN_CLASSES = {name: HERE / f"{name}_classes.txt" for name in ("voc", "coco", "ade20k", "cityscapes")}
BACKGROUND_NAMES = {"background", "_background_", "__background__", "bg"}
LABEL_SUFFIXES = (".json", ".npy", ".csv")


def _resolve(root: Path, value: str | Path) -> Path:
    """An absolute path as is; a relative one under ``root`` (or as given, when only that exists)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    under = root / path
    if under.exists() or not path.exists():
        return under
    return path


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, with one-line errors naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModusegError(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    except IsADirectoryError as exc:
        raise ModusegError(f"{what} {path} is a folder; point at the file") from exc
    except OSError as exc:
        raise ModusegError(
            f"{what} {path} cannot be read ({exc.strerror or exc}); check the path and its permissions"
        ) from exc


def _norm_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " _-")


def load_class_names(classes: str, root: Path | None = None) -> tuple[list[str], str]:
    """``"voc"``, ``"coco"`` or a text file (one name a line, background first) → (names, description)."""
    if classes in BUILTIN_CLASSES:
        path, desc = BUILTIN_CLASSES[classes], classes
    else:
        path = _resolve(root, classes) if root is not None else Path(classes).expanduser()
        desc = str(path)
        if not path.is_file():
            raise ModusegError(
                f"classes file {path} does not exist; use classes=voc, classes=coco or the path of a text file "
                "with one class name per line, background first"
            )
    names = [line.strip() for line in _read_text(path, "classes file").splitlines() if line.strip()]
    if len(names) < 2:
        raise ModusegError(
            f"classes file {path} lists {len(names)} name(s); it needs background plus at least one class, one a line"
        )
    if names[0].lower() not in BACKGROUND_NAMES:
        raise ModusegError(
            f"classes file {path} starts with {names[0]!r}, not background; class id 0 is background, so add "
            "'background' as the first line"
        )
    seen: set[str] = set()
    for name in names:
        key = _norm_name(name)
        if key in seen:
            raise ModusegError(f"classes file {path} lists {name!r} twice; class names must be unique")
        seen.add(key)
    return names, desc


def _strip_image_suffix(key: str) -> str:
    key = str(key)
    suffix = os.path.splitext(key)[1].lower()
    return os.path.splitext(key)[0] if suffix in IMAGE_SUFFIXES else key


class LabelTable:
    """Image-level labels read from a file, validated against the class names."""

    def __init__(self, path: Path, class_names: list[str], classes_desc: str):
        self.path = path
        self.class_names = class_names
        self.classes_desc = classes_desc
        raw = self._read(path)
        self.labels = self._parse(raw)

    # -- reading

    def _read(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise ModusegError(
                f"labels file {path} does not exist; set labels_file to a .json, .npy or .csv file of image-level "
                "labels, or leave it unset to derive labels from the masks"
            )
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ModusegError(f"labels file {path} is not valid JSON ({exc}); fix or regenerate it") from exc
        elif suffix == ".npy":
            try:
                data = np.load(path, allow_pickle=True)
            except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise ModusegError(f"labels file {path} is not a readable .npy file ({reason}); regenerate it") from exc
            if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
                data = data.item()
        elif suffix == ".csv":
            data = self._read_csv(path)
        else:
            raise ModusegError(
                f"labels file {path} has suffix {path.suffix!r}; allowed: {', '.join(LABEL_SUFFIXES)} "
                "(see docs/formats.md)"
            )
        if not isinstance(data, dict):
            raise ModusegError(
                f"labels file {path} holds a {type(data).__name__}, not a mapping of image id → labels; "
                "see docs/formats.md for the accepted formats"
            )
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, np.ndarray):
                value = value.ravel().tolist()
            elif isinstance(value, (int, float, str, np.integer)) and not isinstance(value, bool):
                value = [value]
            elif not isinstance(value, (list, tuple)):
                raise ModusegError(
                    f"labels file {path}: image {key!r} has labels {value!r}; expected a list of class ids or names"
                )
            out[_strip_image_suffix(key)] = list(value)
        return out

    @staticmethod
    def _read_csv(path: Path) -> dict[str, list[str]]:
        data: dict[str, list[str]] = {}
        text = _read_text(path, "labels file")
        for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["id", "labels"]:
                continue
            if len(row) > 2:
                raise ModusegError(
                    f"labels file {path} line {lineno} has {len(row)} fields; expected `id,labels` with the "
                    "labels separated by ';' (e.g. img1,dog;person)"
                )
            labels = row[1] if len(row) > 1 else ""
            data[row[0].strip()] = [p.strip() for p in labels.split(";") if p.strip()]
        return data

    # -- parsing

    def _is_multi_hot(self, raw: dict[str, list]) -> bool:
        c = len(self.class_names)
        if not raw:
            return False
        lengths = {len(v) for v in raw.values()}
        if len(lengths) != 1 or lengths.pop() not in (c - 1, c) or c - 1 < 2:
            return False
        for values in raw.values():
            for v in values:
                if isinstance(v, str) or v not in (0, 1):
                    return False
        return True

    def _parse(self, raw: dict[str, list]) -> dict[str, tuple[int, ...]]:
        c = len(self.class_names)
        if self._is_multi_hot(raw):
            offset = 1 if len(next(iter(raw.values()))) == c - 1 else 0
            return {
                key: tuple(sorted(i + offset for i, v in enumerate(values) if v and i + offset != 0))
                for key, values in raw.items()
            }
        lookup = {_norm_name(n): i for i, n in enumerate(self.class_names)}
        out: dict[str, tuple[int, ...]] = {}
        for key, values in raw.items():
            ids: set[int] = set()
            for value in values:
                ids.add(self._to_id(key, value, lookup))
            out[key] = tuple(sorted(ids))
        return out

    def _to_id(self, key: str, value: Any, lookup: dict[str, int]) -> int:
        c = len(self.class_names)
        where = f"labels file {self.path}: image {key!r}"
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                value = int(text)
            else:
                cid = lookup.get(_norm_name(text))
                if cid is None:
                    raise ModusegError(
                        f"{where} has class name {text!r}, which is not among the {c} classes of "
                        f"{self.classes_desc}{did_you_mean(text, self.class_names)}; fix the name or set classes="
                    )
                value = cid
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ModusegError(f"{where} has label {value!r}; expected a class id (int) or a class name")
        elif not math.isfinite(float(value)):
            raise ModusegError(f"{where} has label {value!r}; class ids must be finite integers")
        elif float(value) != int(value):
            raise ModusegError(f"{where} has label {value!r}; class ids must be integers")
        cid = int(value)
        if not 1 <= cid <= c - 1:
            hint = " (background is implicit: list foreground ids only)" if cid == 0 else ""
            raise ModusegError(
                f"{where} has class id {cid}, outside 1..{c - 1} for the {c} classes of {self.classes_desc}{hint}; "
                "fix the file, or pick the labels_file/classes that belong together"
            )
        return cid

    def for_ids(self, ids: list[str]) -> dict[str, tuple[int, ...]]:
        missing = [i for i in ids if i not in self.labels]
        if missing:
            raise ModusegError(
                f"labels file {self.path} has no entry for image {missing[0]!r} ({len(missing)} of {len(ids)} ids "
                "of the split are missing); add them, or leave labels_file unset to derive labels from the masks"
            )
        return {i: self.labels[i] for i in ids}


def labels_from_mask(path: Path, class_names: list[str], classes_desc: str) -> tuple[int, ...]:
    """The unique class ids of a GT mask except background (0) and ignore (255)."""
    mask = read_mask(path)
    present = np.unique(mask)
    c = len(class_names)
    bad = [int(v) for v in present if v != IGNORE_INDEX and not 0 <= v < c]
    if bad:
        raise ModusegError(
            f"mask {path} holds class id {bad[0]}, outside 0..{c - 1} (and 255) for the {c} classes of "
            f"{classes_desc}; set classes= to the class list these masks use, or point mask_dir at the right masks"
        )
    return tuple(int(v) for v in present if v != 0 and v != IGNORE_INDEX)


# --------------------------------------------------------------------------- the dataset

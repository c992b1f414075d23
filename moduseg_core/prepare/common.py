"""What every ``moduseg prepare`` job shares: the output folder (an ``OutputDir`` whose files are
written atomically), links to the user's own folders, split lists, the label table and the summary.

A prepared folder is a dataset root that the matching dataset plugin reads as it is: the images
stay where they are (``OUT/<images>`` is a symbolic link to the user's folder, never a copy), the
masks and lists moduseg writes sit beside them, and ``prepare_summary.json`` records what was done.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import IGNORE_INDEX
from moduseg_core.files.outputs import OutputDir
from moduseg_core.files.writing import atomic_path, write_json, write_text

SUMMARY = "prepare_summary.json"
LABELS = "image_labels.json"
#: what a prepared root says about its masks (read by the ``ade20k`` / ``cityscapes`` dataset plugins)
DATASET_NOTE = "moduseg_dataset.json"


@dataclass
class SplitSummary:
    """What one split of a prepared dataset holds."""

    name: str
    images: int = 0
    left_out: int = 0  # images without any annotation (coco, unless --keep-empty)
    pixels: int = 0
    ignore_pixels: int = 0
    class_images: dict[int, int] = field(default_factory=dict)  # class id → images that hold it
    notes: dict[str, int] = field(default_factory=dict)  # counts worth reporting (crowd regions, ...)

    def add(self, mask: np.ndarray) -> tuple[int, ...]:
        """Count one mask; returns its image-level labels (ids except 0 and 255, ascending)."""
        self.images += 1
        self.pixels += int(mask.size)
        counts = np.bincount(mask.ravel(), minlength=256)
        self.ignore_pixels += int(counts[IGNORE_INDEX])
        labels = tuple(int(c) for c in np.flatnonzero(counts) if c not in (0, IGNORE_INDEX))
        for c in labels:
            self.class_images[c] = self.class_images.get(c, 0) + 1
        return labels

    def count(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def as_dict(self, class_names: list[str]) -> dict[str, Any]:
        return {
            "images": self.images,
            "left_out": self.left_out,
            "classes_present": len(self.class_images),
            "classes": len(class_names) - 1,
            "images_per_class": {class_names[c]: n for c, n in sorted(self.class_images.items())},
            "pixels": self.pixels,
            "ignore_pixels": self.ignore_pixels,
            **self.notes,
        }

    def line(self, class_names: list[str]) -> str:
        """One line for the terminal."""
        share = 100.0 * self.ignore_pixels / self.pixels if self.pixels else 0.0
        left = f" ({self.left_out} without annotations left out)" if self.left_out else ""
        notes = "".join(f", {k.replace('_', ' ')} {n:,}" for k, n in self.notes.items())
        return (
            f"{self.name}: {self.images:,} images{left}, {len(self.class_images)} of {len(class_names) - 1} classes "
            f"present, ignore pixels {self.ignore_pixels:,} ({share:.2f}%){notes}"
        )


def begin_output(out: Path, command: str, planned: Iterable[str], *, overwrite: bool) -> OutputDir:
    """The output folder of a prepare job, checked and marked incomplete (call after every input check)."""
    output = OutputDir(out, command, overwrite=overwrite)
    output.check()
    return output.begin(planned)


def link(target: Path, link_path: Path) -> None:
    """``link_path`` → ``target`` (absolute), put in place atomically and recorded as written.
    A folder already at ``link_path`` that is not a link is never replaced."""
    if link_path.exists() and not link_path.is_symlink():
        raise ModusegError(
            f"{link_path} exists and is not a link moduseg made; pass a new or empty --out folder"
        )
    try:
        with atomic_path(link_path) as tmp:
            os.symlink(os.path.abspath(target), tmp, target_is_directory=True)
    except OSError as exc:
        raise ModusegError(
            f"cannot make the link {link_path} → {target} ({exc.strerror or exc}); use a file system that "
            "allows symbolic links for --out"
        ) from exc


def write_split(path: Path, ids: Iterable[str]) -> None:
    write_text(path, "".join(f"{i}\n" for i in ids))


def write_labels(path: Path, labels: dict[str, tuple[int, ...]]) -> None:
    """``{id: [class ids]}`` sorted by id (what the dataset plugins read as ``labels_file``)."""
    write_json(path, {i: list(labels[i]) for i in sorted(labels)})


def write_summary(out: Path, data: dict[str, Any]) -> None:
    write_json(out / SUMMARY, data)


def finish_scene(
    out: Path, output: OutputDir, *, dataset: str, root: Path, option: str, value: str, names: list[str],
    labels: dict[str, tuple[int, ...]], summaries: list[SplitSummary],
) -> dict[str, Any]:
    """The end of ``prepare ade20k`` / ``prepare cityscapes``: labels, the dataset note (how the unlabelled
    pixels were written, ``option`` = ``value``), the summary, the output marker; the result with its lines."""
    write_labels(out / LABELS, labels)
    write_json(out / DATASET_NOTE, {"dataset": dataset, option: value, "background": value == "background"})
    result = {
        "dataset": dataset,
        "root": str(root),
        option: value,
        "class_names": names,
        "splits": {s.name: s.as_dict(names) for s in summaries},
    }
    write_summary(out, result)
    output.finish()
    result["lines"] = [s.line(names) for s in summaries]
    return result


def builtin_class_names(name: str) -> list[str]:
    """The class list the built-in dataset plugins ship as ``<name>_classes.txt`` (background first)."""
    from importlib.resources import files

    text = (files("moduseg_builtins.datasets") / f"{name}_classes.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_dir(path: Path, what: str, option: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModusegError(f"{option} {path} is not a folder; pass the {what}")
    return path


def check_file(path: Path, what: str, option: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModusegError(f"{option} {path} is not a file; pass the {what}")
    return path


def stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem → file for the files of ``folder`` with one of ``suffixes`` (hidden files skipped)."""
    found: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in suffixes and not entry.name.startswith(".") and entry.is_file():
                found.setdefault(stem, Path(entry.path))
    return found

"""Labelers: ``gt`` (the ground-truth mask, an oracle upper bound) and ``precomputed`` (pseudo masks on disk).

Both return ``int32 H×W`` class maps: 0 background, 1..C-1 classes, 255 ignore. numpy and pillow only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from moduseg_core import ModusegError, Options
from moduseg_core.contract.types import BACKGROUND, IGNORE_INDEX, Sample
from moduseg_core.files.io import read_mask


def _image_hw(image: np.ndarray) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ModusegError(
            f"labeler got an image of shape {getattr(image, 'shape', None)}; expected uint8 H×W×3 RGB "
            "(read it with moduseg_core.files.io.read_image)"
        )
    return int(image.shape[0]), int(image.shape[1])


class GTLabeler:
    """ORACLE: returns the sample's ground-truth mask. An upper bound, not weak supervision."""

    oracle = True

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        if sample.mask_path is None:
            raise ModusegError(
                f"labeler 'gt' needs a ground-truth mask but image {sample.id!r} has none: the dataset has no masks "
                "for this split; use a labeler that does not read ground truth (e.g. precomputed) or add the masks"
            )
        mask = read_mask(sample.mask_path, expected_hw=_image_hw(image))
        return np.array(mask, dtype=np.int32)


class PrecomputedLabelerOptions(Options):
    root: Path = Field(
        ...,
        description="folder of {id}.png pseudo masks (palette or grayscale class ids; 255 = ignore), "
        "e.g. the paper's released CorrCLIP masks",
    )
    file: str = Field(
        "{id}.png",
        description="the mask's file under root: {id} = the dataset's image id, {stem} = the image file's name "
        "without suffix (the released CorrCLIP masks of Cityscapes: {stem}.png); docs/labelers.md",
    )
    enforce_labels: bool = Field(
        True,
        description="pixels whose class is neither background nor one of the image-level labels become 255 (ignore)",
    )

    @field_validator("file")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if "{id}" not in value and "{stem}" not in value:
            raise ValueError("file must name the mask through {id} or {stem}, e.g. {id}.png")
        try:
            value.format(id="x", stem="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"file {value!r} may hold only the placeholders {{id}} and {{stem}} ({exc})") from exc
        return value


class PrecomputedLabeler:
    """Reads ``{root}/{id}.png`` pseudo masks produced by another tool."""

    oracle = False

    def __init__(self, options: PrecomputedLabelerOptions):
        self.root = Path(options.root).expanduser()
        self.file = options.file
        self.enforce_labels = options.enforce_labels
        if not self.root.is_dir():
            raise ModusegError(
                f"labeler 'precomputed' root {self.root} does not exist or is not a folder; "
                "set --set labeler.root=<folder of {id}.png pseudo masks>"
            )

    def path_for(self, image_id: str, image_path: Path | None = None) -> Path:
        stem = Path(image_path).stem if image_path is not None else image_id
        return self.root / self.file.format(id=image_id, stem=stem)

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        path = self.path_for(sample.id, sample.image_path)
        if not path.is_file():
            raise ModusegError(
                f"pseudo mask {path} for image {sample.id!r} does not exist; labeler 'precomputed' needs one "
                f"{self.file} per image under its root (check labeler.root, labeler.file and the dataset split)"
            )
        mask = np.array(read_mask(path, expected_hw=_image_hw(image)), dtype=np.int32)
        low, high = int(mask.min(initial=0)), int(mask.max(initial=0))
        if low < 0 or high > IGNORE_INDEX:
            bad = low if low < 0 else high
            raise ModusegError(
                f"pseudo mask {path} holds value {bad}; class maps hold 0 (background), 1..254 (classes) or "
                "255 (ignore); regenerate it as an 8-bit PNG"
            )
        if self.enforce_labels:
            allowed = np.zeros(256, dtype=bool)
            allowed[[BACKGROUND, IGNORE_INDEX]] = True
            for cid in sample.labels:
                if 0 <= cid < 256:
                    allowed[cid] = True
            mask[~allowed[mask]] = IGNORE_INDEX
        return mask

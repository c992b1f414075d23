"""Where each bank vector came from: its image and its purified region (``provenance.jsonl`` of a bank).

One JSON line per bank image that gave a record, in the bank's canonical order (source, split order)::

    {"image": "2008_000123", "path": "/data/voc/JPEGImages/2008_000123.jpg", "size": [375, 500],
     "small": [15],
     "regions": [{"class": 0, "row": 0, "box": [0, 0, 500, 375], "rle": "...", "distance": 0.412311},
                 {"class": 12, "row": null, "box": [40, 31, 120, 200], "rle": "...", "distance": 0.903112}]}

- ``size``: the height and width the regions were purified and pooled at (the image's working size,
  ``method.work_pixels``); ``path``: the image file as the bank's dataset named it;
- ``small``: the classes whose purified region was under ``method.min_region_area`` (no vector);
- ``regions``: one per vector, classes ascending: ``box`` ``[x, y, w, h]`` and ``rle`` (COCO's compressed
  RLE of the purified region, ``pycocotools.mask.decode`` reads ``{"size": size, "counts": rle}``),
  ``row`` the vector's row in ``vectors.npy`` or null when the outlier filter dropped it, ``distance``
  its Euclidean distance to its class's mean before the filter (rounded to 6 decimals).

Written with the bank (``Bank.save``, atomically with the other files) from the same canonical records as
``vectors.npy``, so a bank built by any executor, resumed or extended with ``--add`` has the same file.
numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError

FILE = "provenance.jsonl"
NO_PROVENANCE = "no provenance: rebuild to explain"


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a binary mask: run lengths over the column-major pixels, the
    first run counting zeros (0 when the first pixel is set)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def rle_string(mask: np.ndarray) -> str:
    """COCO's compressed RLE string: each count (from the third on, as the difference to the count two
    before) in 5-bit groups, low first, 0x20 marking a continuation, offset by 48 into ASCII."""
    counts = rle_counts(mask)
    chars = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
            if not more:
                break
    return "".join(chars)


def region_box(mask: np.ndarray) -> list[int]:
    """``[x, y, w, h]`` of a non-empty boolean mask (``[0, 0, 0, 0]`` when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def encode_region(mask: np.ndarray) -> tuple[list[int], str]:
    """A purified region's box and compressed RLE."""
    return region_box(mask), rle_string(mask)


def decode_rle(counts: str, size: Sequence[int]) -> np.ndarray:
    """COCO's compressed RLE string (``Segmentation.to_coco_rle``, pycocotools) → bool ``H×W``."""
    values: list[int] = []
    i = 0
    while i < len(counts):
        x, shift, more = 0, 0, True
        while more:
            c = ord(counts[i]) - 48
            x |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and c & 0x10:
                x |= -1 << (5 * shift)
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    height, width = int(size[0]), int(size[1])
    flat = np.zeros(height * width, bool)
    at, value = 0, False
    for run in values:
        if value:
            flat[at : at + run] = True
        at += run
        value = not value
    return flat.reshape(width, height).T


def class_distances(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each vector's Euclidean distance to its class's mean (float64), as the outlier filter measures it."""
    out = np.zeros(len(labels), np.float64)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        members = vectors[idx].astype(np.float64)
        out[idx] = np.linalg.norm(members - members.mean(axis=0), axis=1)
    return out


@dataclass
class Provenance:
    """A bank's ``provenance.jsonl``, with lookups from a bank row to its image and region."""

    images: list[dict[str, Any]]
    #: per bank row: (line, region) in ``images``
    where: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.where:
            rows: dict[int, tuple[int, int]] = {}
            for i, entry in enumerate(self.images):
                for j, region in enumerate(entry["regions"]):
                    if region.get("row") is not None:
                        rows[int(region["row"])] = (i, j)
            self.where = [rows[r] for r in range(len(rows))] if set(rows) == set(range(len(rows))) else []
            if len(rows) and not self.where:
                raise ModusegError("the bank's provenance.jsonl does not cover its rows 0..N-1; rebuild the bank")

    @classmethod
    def from_records(cls, records: Iterable[Any], keep: np.ndarray, distances: np.ndarray) -> Provenance:
        """From ``bank_build.ImageRecords`` in canonical order (the order of ``keep`` and ``distances``)."""
        images, at, row = [], 0, 0
        for record in records:
            regions = []
            for k, c in enumerate(record.labels):
                kept = bool(keep[at])
                regions.append(
                    {
                        "class": int(c),
                        "row": row if kept else None,
                        "box": list(record.boxes[k]),
                        "rle": record.rles[k],
                        "distance": round(float(distances[at]), 6),
                    }
                )
                row += kept
                at += 1
            images.append(
                {
                    "image": record.image_id,
                    "path": record.path,
                    "size": list(record.hw),
                    "small": list(record.small_classes),
                    "regions": regions,
                }
            )
        return cls(images)

    def __len__(self) -> int:
        return len(self.where)

    def text(self) -> str:
        return "".join(json.dumps(entry, sort_keys=False, separators=(",", ":")) + "\n" for entry in self.images)

    def write(self, path: Path) -> None:
        Path(path).write_text(self.text(), encoding="utf-8")

    @classmethod
    def read(cls, path: Path | str) -> Provenance:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            return cls([json.loads(line) for line in lines if line.strip()])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModusegError(f"{path} is unreadable ({exc}); rebuild the bank") from exc

    def row(self, row: int) -> dict[str, Any]:
        """A bank row's image id, image path, class, box, rle, distance and size."""
        i, j = self.where[int(row)]
        entry = self.images[i]
        return {**entry["regions"][j], "image": entry["image"], "path": entry["path"], "size": entry["size"]}

    def regions(self) -> Iterable[dict[str, Any]]:
        """Every region (kept and dropped) with its image fields."""
        for entry in self.images:
            for region in entry["regions"]:
                yield {**region, "image": entry["image"], "path": entry["path"], "size": entry["size"]}

    def counts(self, n_classes: int) -> dict[str, np.ndarray]:
        """Per class: regions seen, below the area minimum, dropped by the filter, kept (``int64 C`` each)."""
        small = np.zeros(n_classes, np.int64)
        dropped = np.zeros(n_classes, np.int64)
        kept = np.zeros(n_classes, np.int64)
        for entry in self.images:
            for c in entry["small"]:
                small[int(c)] += 1
            for region in entry["regions"]:
                (kept if region.get("row") is not None else dropped)[int(region["class"])] += 1
        return {"seen": small + dropped + kept, "small": small, "dropped": dropped, "kept": kept}

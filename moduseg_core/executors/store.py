"""The bank's shard store: chunk record files that any number of workers write, on any node.

``BANK/shards/`` holds:

- ``settings.json``: what the records depend on (the labeler, purifier, encoder and aggregator with
  their options, the area minimum, the working size, the chunk size, the dataset and its split and
  limit). A store of other settings is not reused: the build starts it afresh.
- one ``S-CCCCCCCC.shard`` per finished chunk (source ``S`` of ``sources.json``, chunk ``C``: the
  ``batch_images`` consecutive images the encoder sees together): a header line, a JSON line
  ``{"images": [{"image", "classes", "regions", "small", "path", "hw", "small_classes", "boxes", "rles"}...],
  "failed": [...], "dim"}`` (the last five: the regions' provenance, ``pipeline/provenance.py``) and the
  float32 vectors, one per (image, class) region, with the stable id ``IMAGE_ID/CLASS``, in split
  order then ascending class. A shard is written whole or not at all (temporary file, then rename),
  so a shard that exists is finished, whoever wrote it; a chunk is the unit of resumption, so a
  resumed job hands the encoder exactly the batches of an uninterrupted one.
- ``done.jsonl``: the manifest of finished images (``{"image", "shard", "source"}`` a line),
  appended by the driver as chunks come in. A shard whose lines are missing (the driver died
  between a worker's write and its own) is found by its file and its lines are added.
- ``sources.json``: the sources (dataset, split, images) the bank was built from, in order.

The store lives in the bank folder, so it must be on storage every worker sees (docs/scaling.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import atomic_path, notify_written, remove_path
from moduseg_core.pipeline.bank_build import ImageRecords, chunks

SHARDS = "shards"
SETTINGS = "settings.json"
DONE = "done.jsonl"
SOURCES = "sources.json"
MAGIC = b"moduseg-shard 1\n"


def shard_name(source: int, chunk: int) -> str:
    return f"{source}-{chunk:08d}.shard"


def write_shard(folder: Path | str, name: str, records: Sequence[ImageRecords], failed: Sequence[str] = ()) -> str:
    """Write one chunk's records (its failed image ids too) atomically into ``folder``; ``name``."""
    full = [r for r in records if len(r.labels)]
    dim = int(full[0].vectors.shape[1]) if full else 0
    header = {
        "images": [{"image": r.image_id, "classes": [int(c) for c in r.labels], "regions": int(r.regions),
                    "small": int(r.small), "path": r.path, "hw": [int(v) for v in r.hw],
                    "small_classes": [int(c) for c in r.small_classes], "boxes": r.boxes, "rles": r.rles}
                   for r in records],
        "failed": list(failed), "dim": dim,
    }
    with atomic_path(Path(folder) / name) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            for r in full:
                f.write(np.ascontiguousarray(r.vectors, dtype="<f4").tobytes())
    return name


def read_header(path: Path) -> dict[str, Any]:
    """A shard's JSON header alone (the vectors are not read)."""
    try:
        with open(path, "rb") as f:
            if f.readline() != MAGIC:
                raise ValueError("not a moduseg shard")
            return json.loads(f.readline())
    except (OSError, ValueError) as exc:
        raise ModusegError(f"bank shard {path} is unreadable ({exc}); delete it and rerun the same command") from exc


def read_shard(path: Path) -> tuple[list[ImageRecords], list[str]]:
    """A chunk's records (``pos`` unset: -1) and its failed image ids."""
    try:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise ValueError("not a moduseg shard")
        end = data.index(b"\n", len(MAGIC))
        header = json.loads(data[len(MAGIC):end])
        dim = int(header["dim"])
        rows = sum(len(i["classes"]) for i in header["images"])
        vectors = np.frombuffer(data, dtype="<f4", offset=end + 1).astype(np.float32).reshape(rows, dim)
        records, row = [], 0
        for image in header["images"]:
            n = len(image["classes"])
            block = vectors[row:row + n] if n else np.zeros((0, 0), np.float32)
            records.append(ImageRecords(-1, image["image"], block, np.asarray(image["classes"], np.int32),
                                        int(image["regions"]), int(image["small"]), image.get("path", ""),
                                        tuple(image.get("hw", (0, 0))), tuple(image.get("small_classes", ())),
                                        image.get("boxes", []), image.get("rles", [])))
            row += n
        return records, list(header["failed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModusegError(f"bank shard {path} is unreadable ({exc}); delete it and rerun the same command") from exc


class ShardStore:
    """``BANK/shards/`` (see the module doc)."""

    def __init__(self, folder: Path | str, settings: dict[str, Any]):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings, sort_keys=True))

    def open(self) -> int:
        """Create the store, or keep the one there when it has the same settings; an old store of other
        settings is emptied (only the store's own files go). The number of records discarded."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / SETTINGS
        discarded = 0
        if path.is_file():
            try:
                same = json.loads(path.read_text()) == self.settings
            except (OSError, ValueError):
                same = False
            if not same:
                for item in self.folder.glob("*.shard"):
                    remove_path(item)
                    discarded += 1
                for name in (DONE, SOURCES):
                    remove_path(self.folder / name)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.settings, indent=1, sort_keys=True) + "\n")
        self.repair()
        return discarded

    def repair(self) -> None:
        """A driver killed while appending leaves a torn last line: rewrite the manifest without it."""
        path = self.folder / DONE
        if not path.is_file():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with atomic_path(path) as tmp:
                tmp.write_bytes(data[: data.rfind(b"\n") + 1])

    def listed(self) -> set[str]:
        """The image ids in the manifest of finished images."""
        listed: set[str] = set()
        path = self.folder / DONE
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    listed.add(json.loads(line)["image"])
                except (ValueError, KeyError, TypeError):
                    continue
        return listed

    def done(self, samples: Sequence[Sample], work: Sequence[range], source: int = 0) -> list[bool]:
        """Per chunk of ``work``: whether its shard exists, holds exactly the chunk's images and none
        failed (a chunk with a failed image is redone, in case the image was fixed)."""
        present = {p.name for p in self.folder.glob("*.shard")}
        flags = []
        for index, chunk in enumerate(work):
            name = shard_name(source, index)
            ok = False
            if name in present:
                try:
                    header = read_header(self.folder / name)
                    ok = not header["failed"] and [i["image"] for i in header["images"]] == [
                        samples[p].id for p in chunk
                    ]
                except (ModusegError, KeyError, TypeError):
                    ok = False
            flags.append(ok)
        return flags

    def mark_done(self, entries: Iterable[tuple[str, str]], source: int) -> None:
        """Append (image id, shard name) lines to the manifest of finished images (``source``: the
        index of the image's source in ``sources.json``)."""
        lines = "".join(json.dumps({"image": i, "shard": s, "source": source}) + "\n" for i, s in entries)
        if lines:
            with open(self.folder / DONE, "a", encoding="utf-8") as f:
                f.write(lines)
            notify_written(self.folder / DONE)

    def write(self, name: str, records: Sequence[ImageRecords], failed: Sequence[str] = ()) -> str:
        return write_shard(self.folder, name, records, failed)

    def read(
        self, samples: Sequence[Sample], work: Sequence[range], source: int = 0
    ) -> tuple[list[ImageRecords], list[str]]:
        """Every chunk's records, with their split positions, and the failed image ids."""
        records: list[ImageRecords] = []
        failed: list[str] = []
        for index, chunk in enumerate(work):
            got, bad = read_shard(self.folder / shard_name(source, index))
            position = {samples[p].id: p for p in chunk}
            for record in got:
                record.pos = position[record.image_id]
            records += got
            failed += bad
        return records, failed

    def read_source(self, source: int, images: int, size: int, offset: int = 0) -> tuple[list[ImageRecords], list[str]]:
        """All records of one source (``images`` images in chunks of ``size``), positioned from ``offset``."""
        records: list[ImageRecords] = []
        failed: list[str] = []
        for index, chunk in enumerate(chunks(images, size)):
            path = self.folder / shard_name(source, index)
            if not path.is_file():
                raise ModusegError(f"the bank store {self.folder} lacks {path.name} of source {source}; rerun the "
                                   "build-bank command that built (or added) that source")
            got, bad = read_shard(path)
            for k, record in enumerate(got):
                record.pos = offset + chunk.start + k
            records += got
            failed += bad
        return records, failed

    def image_ids(self, source: int, images: int, size: int) -> list[str]:
        """The ids of a stored source's images (from the shards' headers)."""
        ids: list[str] = []
        for index in range(len(chunks(images, size))):
            path = self.folder / shard_name(source, index)
            if path.is_file():
                header = read_header(path)
                ids += [i["image"] for i in header["images"]] + list(header["failed"])
        return ids

    def read_settings(self) -> dict[str, Any] | None:
        path = self.folder / SETTINGS
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def sources(self) -> list[dict[str, Any]]:
        path = self.folder / SOURCES
        return json.loads(path.read_text()) if path.is_file() else []

    def set_sources(self, sources: list[dict[str, Any]]) -> None:
        with atomic_path(self.folder / SOURCES) as tmp:
            tmp.write_text(json.dumps(sources, indent=1) + "\n")

"""The feature bank: built from a labelled split, saved as a directory, loaded with checks.

A bank directory holds ``manifest.json`` (components, options, method numbers,
versions, dataset fingerprint, per-class counts), ``vectors.npy`` (float32 N×C),
``labels.npy`` (int32 N), ``index/`` (the index's own files) and, from format version 2,
``provenance.jsonl`` (where each vector came from: ``provenance.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.components import build, identity
from moduseg_core.contract.config import Choice
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import IGNORE_INDEX, Sample
from moduseg_core.files.faults import crash_point
from moduseg_core.files.io import notify_written, remove_path, temp_name, temp_writer_alive

FORMAT = "moduseg-bank"
#: 2: ``provenance.jsonl`` (``pipeline/provenance.py``) says where each vector came from; version 1 banks load
#: and predict without it
FORMAT_VERSION = 2


@dataclass
class Bank:
    vectors: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    manifest: dict[str, Any]
    index: Any = field(default=None, repr=False)
    #: The encoder that built the bank, reused by inference in the same process.
    encoder_component: Any = field(default=None, repr=False)
    #: Where each vector came from (``provenance.Provenance``): set by a build, read on demand from a saved bank.
    provenance: Any = field(default=None, repr=False)
    #: The folder the bank was loaded from.
    directory: Path | None = field(default=None, repr=False)

    def traced(self) -> Any:
        """The bank's ``Provenance``, or None for a bank saved without it (format version 1)."""
        if self.provenance is None and self.directory is not None:
            from moduseg_core.pipeline.provenance import FILE, Provenance

            if (self.directory / FILE).is_file():
                self.provenance = Provenance.read(self.directory / FILE)
        return self.provenance

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def encoder(self) -> dict[str, Any]:
        return self.manifest["components"]["encoder"]

    @property
    def aggregator(self) -> dict[str, Any]:
        return self.manifest["components"]["aggregator"]

    def counts(self) -> dict[str, int]:
        ids, n = np.unique(self.labels, return_counts=True)
        return {
            self.class_names[i] if i < len(self.class_names) else str(i): int(c) for i, c in zip(ids, n, strict=True)
        }

    # -- persistence -----------------------------------------------------------------

    def save(self, directory: Path | str) -> Path:
        """Write the bank into ``directory`` (created if need be), touching only the bank's own files
        (``manifest.json``, ``vectors.npy``, ``labels.npy``, ``index/``, ``provenance.jsonl``): anything else
        there stays.

        Everything is first written to ``.bank_save.PID-RANDOM.tmp/`` inside the directory, then moved
        in place: the old manifest goes first and the new one comes last, so the directory holds either
        a manifest that matches its files or no manifest at all (not a bank until saved again). A
        temporary folder left by a killed save is removed by the next save."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ModusegError(f"cannot save the bank to {directory}: it is a file; pass a folder path")
        directory.mkdir(parents=True, exist_ok=True)
        self._refuse_foreign(directory)
        for stale in directory.glob(".bank_save.*.tmp"):
            if not temp_writer_alive(stale.name):
                remove_path(stale)
        staging = directory / temp_name("bank_save")
        try:
            staging.mkdir()
            np.save(staging / "vectors.npy", self.vectors.astype(np.float32))
            np.save(staging / "labels.npy", self.labels.astype(np.int32))
            (staging / "index").mkdir()  # the index's save() gets an existing, empty folder (docs/plugins.md)
            self.index.save(staging / "index")
            provenance = self.traced()
            if provenance is not None:
                provenance.write(staging / "provenance.jsonl")
            (staging / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=False) + "\n")
            crash_point("bank-save-staged")
            remove_path(directory / "manifest.json")  # from here on the old files are no bank
            remove_path(directory / "provenance.jsonl")
            traced = ["provenance.jsonl"] if provenance is not None else []
            for name in ("vectors.npy", "labels.npy", "index", *traced, "manifest.json"):
                if name == "index":
                    remove_path(directory / "index")
                os.replace(staging / name, directory / name)
                notify_written(directory / name)
                crash_point("bank-save-commit")
        finally:
            remove_path(staging)
        return directory

    @staticmethod
    def _refuse_foreign(directory: Path) -> None:
        """Never replace a ``manifest.json`` or an ``index/`` that is not a moduseg bank's."""
        manifest = directory / "manifest.json"
        if manifest.exists():
            try:
                ours = json.loads(manifest.read_text()).get("format") == FORMAT
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                ours = False
            if not ours:
                raise ModusegError(
                    f"cannot save the bank to {directory}: its manifest.json is not a moduseg bank's; pass a new or "
                    "empty folder"
                )
        index = directory / "index"
        if index.exists() and not (index.is_dir() and (not any(index.iterdir()) or (index / "index.json").is_file())):
            raise ModusegError(
                f"cannot save the bank to {directory}: its index/ is not a moduseg index; pass a new or empty folder"
            )

    @classmethod
    def load(cls, directory: Path | str, *, index: Choice | None = None) -> Bank:
        """Load a bank; with ``index`` naming another index kind, the vectors are re-indexed."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            if any(directory.glob(".bank_save.*.tmp")) or (directory / "vectors.npy").is_file():
                raise ModusegError(
                    f"bank {directory} is incomplete (no manifest.json: its save was interrupted); "
                    "rerun the `moduseg build-bank` (or `run`) that writes it"
                )
            raise ModusegError(
                f"{directory} is not a moduseg bank (no manifest.json); build one with `moduseg build-bank`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModusegError(
                f"{manifest_path} is corrupt ({exc.msg} at line {exc.lineno}); rebuild the bank"
            ) from exc
        if manifest.get("format") != FORMAT:
            raise ModusegError(f"{manifest_path} is not a moduseg bank manifest (format {manifest.get('format')!r})")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ModusegError(
                f"bank {directory} has format version {manifest['format_version']}, newer than this moduseg "
                f"understands ({FORMAT_VERSION}); upgrade moduseg"
            )
        try:
            vectors = np.load(directory / "vectors.npy")
            labels = np.load(directory / "labels.npy")
        except (OSError, ValueError) as exc:
            raise ModusegError(f"bank {directory} is incomplete or corrupt ({exc}); rebuild it") from exc
        if len(vectors) != len(labels) or vectors.ndim != 2:
            raise ModusegError(f"bank {directory} is corrupt: {len(vectors)} vectors but {len(labels)} labels")
        built_with = _portable_index(Choice(**manifest["components"]["index"]))
        choice = index or built_with
        component = build("index", choice).component
        if choice.name == built_with.name:
            component.load(directory / "index")
        else:
            component.add(vectors, labels)
        return cls(vectors, labels, list(manifest["class_names"]), manifest, component, directory=directory)

    def check_encoder(self, encoder: Choice, aggregator: Choice | None = None) -> None:
        """Refuse to query this bank with features from another encoder configuration."""
        wanted = identity("encoder", encoder)
        have = {"name": self.encoder["name"], "options": self.encoder["options"]}
        if wanted != have:
            diff = _diff(have, wanted)
            raise ModusegError(
                f"bank was built with encoder {have['name']} {have['options']} but this run uses "
                f"{wanted['name']} {wanted['options']} ({diff}); use the bank's encoder settings or rebuild the bank"
            )
        if aggregator is not None:
            wanted_agg = identity("aggregator", aggregator)
            have_agg = {"name": self.aggregator["name"], "options": self.aggregator["options"]}
            if wanted_agg != have_agg:
                raise ModusegError(
                    f"bank was built with aggregator {have_agg['name']} but this run uses {wanted_agg['name']}; "
                    "use the same aggregator or rebuild the bank"
                )


def _created() -> str:
    """Now (UTC), or ``$SOURCE_DATE_EPOCH`` when set: reproducible builds give byte-identical manifests."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (
        _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        if epoch.isdigit()
        else _dt.datetime.now(_dt.timezone.utc)
    )
    return when.isoformat(timespec="seconds")


def _portable_index(choice: Choice) -> Choice:
    """The index a bank records, without its runtime options (device, gpu, threads...): those
    describe the machine that built it, not the index, so a bank built with ``device=cuda``
    loads on a CPU-only machine with the defaults (or what the run sets). Banks written before
    the manifest left them out still record them; they are dropped here."""
    from moduseg_core.contract.plugins import get_spec

    runtime: frozenset[str] = getattr(get_spec("index", choice.name).options, "runtime_fields", frozenset())
    return Choice(name=choice.name, options={k: v for k, v in choice.options.items() if k not in runtime})


def _diff(have: dict, wanted: dict) -> str:
    if have["name"] != wanted["name"]:
        return f"name {have['name']!r} != {wanted['name']!r}"
    parts = []
    for key in sorted(set(have["options"]) | set(wanted["options"])):
        a, b = have["options"].get(key), wanted["options"].get(key)
        if a != b:
            parts.append(f"{key}: bank {a!r}, run {b!r}")
    return "; ".join(parts)


def check_class_map(
    classes: np.ndarray, sample: Sample, image_hw: tuple[int, int], n_classes: int, labeler: str
) -> None:
    if classes.shape != image_hw:
        raise ModusegError(
            f"labeler {labeler!r} gave a {classes.shape} map for image {sample.image_path} of size {image_hw}"
        )
    ids = np.unique(classes)
    bad = ids[(ids != IGNORE_INDEX) & ((ids < 0) | (ids >= n_classes))]
    if len(bad):
        raise ModusegError(
            f"labeler {labeler!r} gave class id {int(bad[0])} for image {sample.id}; "
            f"allowed 0..{n_classes - 1} and 255"
        )

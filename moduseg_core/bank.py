"""The feature bank: built from a labelled split, saved as a directory, loaded with checks.

A bank directory holds ``manifest.json`` (components, options, method numbers,
versions, dataset fingerprint, per-class counts), ``vectors.npy`` (float32 N×C),
``labels.npy`` (int32 N) and ``index/`` (the index's own files).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .components import Built, Timer, build, identity, package_versions
from .config import Choice, MethodConfig
from .errors import ModusegError
from .io import atomic_path, read_image, write_json
from .method.bank_filter import outlier_keep
from .method.pooling import valid_rows
from .method.scale import downscale_image, resize_nearest, work_hw
from .pipeline import load_images
from .progress import progress
from .types import BACKGROUND, IGNORE_INDEX, Sample

FORMAT = "moduseg-bank"
FORMAT_VERSION = 1


@dataclass
class Bank:
    vectors: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    manifest: dict[str, Any]
    index: Any = field(default=None, repr=False)
    #: The encoder that built the bank, reused by inference in the same process.
    encoder_component: Any = field(default=None, repr=False)

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
        return {self.class_names[i] if i < len(self.class_names) else str(i): int(c) for i, c in zip(ids, n)}

    # -- persistence -----------------------------------------------------------------

    def save(self, directory: Path | str) -> Path:
        """Write the bank atomically: a crash leaves the previous directory (or nothing)."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            np.save(tmp / "vectors.npy", self.vectors.astype(np.float32))
            np.save(tmp / "labels.npy", self.labels.astype(np.int32))
            self.index.save(tmp / "index")
            write_json(tmp / "manifest.json", self.manifest)
        return directory

    @classmethod
    def load(cls, directory: Path | str, *, index: Choice | None = None) -> "Bank":
        """Load a bank; with ``index`` naming another index kind, the vectors are re-indexed."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise ModusegError(
                f"{directory} is not a moduseg bank (no manifest.json); build one with `moduseg build-bank`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModusegError(f"{manifest_path} is corrupt ({exc.msg} at line {exc.lineno}); rebuild the bank") from exc
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
        return cls(vectors, labels, list(manifest["class_names"]), manifest, component)

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


def _portable_index(choice: Choice) -> Choice:
    """The index a bank records, without its runtime options (device, gpu, threads...): those
    describe the machine that built it, not the index, so a bank built with ``device=cuda``
    loads on a CPU-only machine with the defaults (or what the run sets). Banks written before
    the manifest left them out still record them; they are dropped here."""
    from .plugins import get_spec

    runtime = getattr(get_spec("index", choice.name).options, "runtime_fields", frozenset())
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


def check_class_map(classes: np.ndarray, sample: Sample, image_hw: tuple[int, int], n_classes: int, labeler: str) -> None:
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


def build_bank(
    samples: Iterable[Sample],
    *,
    n_samples: int,
    class_names: list[str],
    labeler: Built,
    purifier: Built,
    encoder: Built,
    aggregator: Built,
    index_choice: Choice,
    method: MethodConfig,
    dataset_info: dict[str, Any],
    timer: Timer | None = None,
) -> Bank:
    """Label → purify → encode → pool every bank image, filter outliers, index."""
    timer = timer or Timer()
    samples = list(samples)
    fit = getattr(labeler.component, "fit", None)
    if callable(fit):
        t0 = time.perf_counter()
        fit(samples)
        timer.add("label_fit", time.perf_counter() - t0)
    vectors: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    regions_total = regions_small = 0
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # image, masks, class ids

    def flush() -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        features = encoder.component.encode_batch([item[0] for item in batch])
        t1 = time.perf_counter()
        for (_, masks, ids), feats in zip(batch, features):
            pooled = aggregator.component.aggregate(feats, masks)
            ok = valid_rows(pooled)
            vectors.append(pooled[ok])
            labels.append(ids[ok])
        timer.add("encode", t1 - t0)
        timer.add("pool", time.perf_counter() - t1)
        batch.clear()

    images = load_images(
        samples, workers=method.loader_workers, lookahead=2 * method.batch_images, max_pixels=method.max_image_pixels
    )
    for sample in progress(samples, total=n_samples, desc="bank"):
        t0 = time.perf_counter()
        image = next(images)  # decoded ahead by the loader workers
        timer.add("read", time.perf_counter() - t0)
        t0 = time.perf_counter()
        classes = np.asarray(labeler.component.label(image, sample))
        check_class_map(classes, sample, image.shape[:2], len(class_names), labeler.name)
        timer.add("label", time.perf_counter() - t0)
        work = work_hw(image.shape[0], image.shape[1], method.work_pixels)
        if work != image.shape[:2]:  # a huge photo: purified, encoded and pooled at its working size
            image, classes = downscale_image(image, work), resize_nearest(classes, work)
        t0 = time.perf_counter()
        masks, ids = [], []
        for c in np.unique(classes):
            if c == IGNORE_INDEX:
                continue
            region = purifier.component.purify(classes == c)
            regions_total += 1
            if int(region.sum()) < method.min_region_area:
                regions_small += 1
                continue
            masks.append(region)
            ids.append(int(c))
        timer.add("purify", time.perf_counter() - t0)
        if masks:
            batch.append((image, np.stack(masks), np.array(ids, np.int32)))
        if len(batch) >= method.batch_images:
            flush()
    flush()

    dim = vectors[0].shape[1] if vectors and vectors[0].size else 0
    all_vectors = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    if len(all_labels) == 0:
        raise ModusegError(
            f"the bank is empty: no region of the {n_samples} images survived purification and the "
            f"{method.min_region_area}-pixel minimum; lower --set method.min_region_area or --set purifier.iterations"
        )
    keep = outlier_keep(all_vectors, all_labels, method.filter_ratio)
    kept_vectors, kept_labels = all_vectors[keep], all_labels[keep]
    t0 = time.perf_counter()
    index = build("index", index_choice)
    index.component.add(kept_vectors, kept_labels)
    timer.add("index", time.perf_counter() - t0)

    def per_class(values: np.ndarray) -> dict[str, int]:
        ids, n = np.unique(values, return_counts=True)
        return {class_names[i]: int(c) for i, c in zip(ids, n)}

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "components": {b.kind: b.describe() for b in (labeler, purifier, encoder, aggregator)}
        | {"index": {"name": index_choice.name, "options": index.options.identity()}},
        "method": method.model_dump(mode="json"),
        "dataset": dataset_info,
        "class_names": class_names,
        "dim": int(kept_vectors.shape[1]),
        "counts": {
            "images": n_samples,
            "regions": regions_total,
            "regions_below_min_area": regions_small,
            "vectors_before_filter": per_class(all_labels),
            "vectors": per_class(kept_labels),
            "background_vectors": int((kept_labels == BACKGROUND).sum()),
        },
        "versions": package_versions(),
    }
    return Bank(kept_vectors, kept_labels, class_names, manifest, index.component)

"""Building a bank: the per-image work (label → purify → encode → pool) and the assembly.

The work is cut into **chunks**: ``method.batch_images`` consecutive images of the split. A chunk's
images are labelled and purified one by one, and those with regions go to the encoder together,
so every executor (in-process or Ray, ``moduseg_core.executors``) hands the encoder exactly the same
batches and gets exactly the same vectors. Each image gives one ``ImageRecords`` (its region
vectors in ascending class order) or one ``ImageFailed``.

``assemble_bank`` orders the records canonically (split order, then class), applies the per-class
outlier filter over the whole bank and builds the index: the result does not depend on which
worker computed what, or in which order they finished.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moduseg_core.contract.components import Built, Timer, build, package_versions
from moduseg_core.contract.config import Choice, MethodConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import BACKGROUND, IGNORE_INDEX, Sample
from moduseg_core.files.failures import ErrorLog, Failure
from moduseg_core.files.faults import crash_point
from moduseg_core.files.progress import Bar
from moduseg_core.method.bank_filter import outlier_keep
from moduseg_core.method.pooling import valid_rows
from moduseg_core.method.scale import downscale_image, resize_nearest, work_hw
from moduseg_core.pipeline.bank import FORMAT, FORMAT_VERSION, Bank, _created, check_class_map
from moduseg_core.pipeline.provenance import Provenance, class_distances, encode_region
from moduseg_core.pipeline.streaming import load_images

#: The bank's per-image components, in data-path order.
WORK_KINDS = ("labeler", "purifier", "encoder", "aggregator")


@dataclass
class ImageRecords:
    """One bank image's regions: a vector and a class id per (image, class) region, classes ascending."""

    pos: int  # the image's place in the split (the canonical order)
    image_id: str
    vectors: np.ndarray  # float32 n×C
    labels: np.ndarray  # int32 n
    regions: int  # class regions found (before the area minimum)
    small: int  # of which under the area minimum
    # provenance (``provenance.py``): the image file, the size its regions have, the classes under the area
    # minimum, and per vector its region's box and compressed RLE
    path: str = ""
    hw: tuple[int, int] = (0, 0)
    small_classes: tuple[int, ...] = ()
    boxes: list[list[int]] = field(default_factory=list)
    rles: list[str] = field(default_factory=list)

    def region_ids(self) -> list[str]:
        """The records' stable ids: ``IMAGE_ID/CLASS``."""
        return [f"{self.image_id}/{int(c)}" for c in self.labels]


@dataclass
class ImageFailed:
    pos: int
    sample: Sample
    stage: str
    error: BaseException


def chunks(n: int, size: int) -> list[range]:
    """The split's chunks: ``size`` consecutive positions each (the last may be shorter). Their
    boundaries depend only on the split and ``size``, so a resumed job, or any number of workers,
    hands the encoder the same batches."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


class BankWorker:
    """Label, purify, encode and pool the images of one chunk (the components built once)."""

    def __init__(self, parts: dict[str, Built], method: MethodConfig, n_classes: int, timer: Timer | None = None):
        self.parts = parts
        self.method = method
        self.n_classes = n_classes
        self.timer = timer or Timer()

    def _regions(
        self, sample: Sample, image: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray], list[int], int, list[int]]:
        labeler, purifier = self.parts["labeler"], self.parts["purifier"]
        t0 = time.perf_counter()
        classes = np.asarray(labeler.component.label(image, sample))
        check_class_map(classes, sample, image.shape[:2], self.n_classes, labeler.name)
        self.timer.add("label", time.perf_counter() - t0)
        work = work_hw(image.shape[0], image.shape[1], self.method.work_pixels)
        if work != image.shape[:2]:  # a huge photo: purified, encoded and pooled at its working size
            image, classes = downscale_image(image, work), resize_nearest(classes, work)
        t0 = time.perf_counter()
        masks, ids, small = [], [], []
        regions = 0
        for c in np.unique(classes):
            if c == IGNORE_INDEX:
                continue
            region = purifier.component.purify(classes == c)
            regions += 1
            if int(region.sum()) < self.method.min_region_area:
                small.append(int(c))
                continue
            masks.append(region)
            ids.append(int(c))
        self.timer.add("purify", time.perf_counter() - t0)
        return image, masks, ids, regions, small

    def _encode(
        self, items: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        t0 = time.perf_counter()
        features = self.parts["encoder"].component.encode_batch([item[1] for item in items])
        t1 = time.perf_counter()
        out = []
        for (_, _, masks, ids), feats in zip(items, features, strict=True):
            pooled = self.parts["aggregator"].component.aggregate(feats, masks)
            ok = valid_rows(pooled)
            out.append((np.asarray(pooled[ok], np.float32), np.asarray(ids[ok], np.int32), ok))
        self.timer.add("encode", t1 - t0)
        self.timer.add("pool", time.perf_counter() - t1)
        return out

    def process(self, items: Sequence[tuple[int, Sample, Any]], *, catch: bool) -> list[ImageRecords | ImageFailed]:
        """``items``: (split position, sample, decoded image or its read ``Failure``) of one chunk, in
        order. With ``catch`` a failing image becomes an ``ImageFailed`` (a failed encoder batch is
        retried one image at a time to find the one at fault); without, the error propagates."""
        results: dict[int, ImageRecords | ImageFailed] = {}
        batch: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        stats: dict[int, tuple[Sample, int, list[int]]] = {}
        for pos, sample, image in items:
            if isinstance(image, Failure):
                if not catch:
                    raise image.error
                results[pos] = ImageFailed(pos, sample, image.stage, image.error)
                continue
            try:
                image, masks, ids, regions, small = self._regions(sample, image)
            except Exception as exc:
                if not catch:
                    raise
                results[pos] = ImageFailed(pos, sample, "label", exc)
                continue
            stats[pos] = (sample, regions, small)
            if masks:
                batch.append((pos, image, np.stack(masks), np.array(ids, np.int32)))
            else:
                results[pos] = ImageRecords(
                    pos,
                    sample.id,
                    np.zeros((0, 0), np.float32),
                    np.zeros(0, np.int32),
                    regions,
                    len(small),
                    str(sample.image_path),
                    image.shape[:2],
                    tuple(small),
                )
        if batch:
            try:
                pooled = self._encode(batch)
            except Exception:
                if not catch:
                    raise
                pooled = []
                for item in batch:  # one image at a time, to find the one at fault
                    try:
                        pooled += self._encode([item])
                    except Exception as exc:  # noqa: BLE001 (on_error=skip: this image's failure, logged)
                        results[item[0]] = ImageFailed(item[0], stats[item[0]][0], "encode", exc)
                        pooled.append(None)  # type: ignore[arg-type]
            for (pos, image, stacked, _), got in zip(batch, pooled, strict=True):
                if got is not None:
                    sample, regions, small = stats[pos]
                    found = [encode_region(region) for region in stacked[got[2]]]
                    results[pos] = ImageRecords(
                        pos,
                        sample.id,
                        got[0],
                        got[1],
                        regions,
                        len(small),
                        str(sample.image_path),
                        image.shape[:2],
                        tuple(small),
                        [b for b, _ in found],
                        [r for _, r in found],
                    )
        return [results[pos] for pos, _, _ in items]


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
    errors: ErrorLog | None = None,
) -> Bank:
    """Label → purify → encode → pool every bank image in this process, filter outliers, index.

    With ``errors`` skipping (``on_error: skip``), an image that fails is logged there and left out."""
    timer = timer or Timer()
    samples = list(samples)
    parts = {"labeler": labeler, "purifier": purifier, "encoder": encoder, "aggregator": aggregator}
    fit_labeler(parts, samples, timer)
    worker = BankWorker(parts, method, len(class_names), timer)
    errors_before = len(errors) if errors is not None else 0
    records = [
        r
        for _, results in run_chunks(
            worker, samples, chunks(len(samples), method.batch_images), method, errors, timer=timer
        )
        for r in results
    ]
    if errors is not None and errors.skip:
        errors.check_some_succeeded(n_samples, since=errors_before)
    return assemble_bank(records, n_samples=n_samples, class_names=class_names, parts=parts, index_choice=index_choice,
                         method=method, dataset_info=dataset_info, timer=timer,
                         skipped=n_samples - len(records))


def fit_labeler(parts: dict[str, Built], samples: Sequence[Sample], timer: Timer | None = None) -> None:
    """A labeler that learns from the whole bank split (``fit``) sees it before any image is labelled."""
    fit = getattr(parts["labeler"].component, "fit", None)
    if callable(fit):
        t0 = time.perf_counter()
        fit(list(samples))
        if timer is not None:
            timer.add("label_fit", time.perf_counter() - t0)


def run_chunks(
    worker: BankWorker, samples: Sequence[Sample], todo: Sequence[range], method: MethodConfig,
    errors: ErrorLog | None, *, timer: Timer | None = None, desc: str = "bank", total: int | None = None,
    already: int = 0,
) -> Iterator[tuple[range, list[ImageRecords]]]:
    """The in-process executor: the chunks ``todo`` one after the other (images decoded ahead by the
    loader workers); yields each chunk with its images' records, in split order. Failures go to
    ``errors`` (``on_error``). A progress bar counts the images (``already`` done before this call)."""
    skip = errors is not None and errors.skip
    positions = [pos for chunk in todo for pos in chunk]
    images = load_images(
        [samples[p] for p in positions],
        workers=method.loader_workers,
        lookahead=2 * method.batch_images,
        max_pixels=method.max_image_pixels,
        skip_errors=skip,
    )
    with Bar(total if total is not None else len(positions), desc) as bar:
        if already:
            bar.update(already)
        for chunk in todo:
            items = []
            for pos in chunk:
                t0 = time.perf_counter()
                items.append((pos, samples[pos], next(images)))  # decoded ahead by the loader workers
                if timer is not None:
                    timer.add("read", time.perf_counter() - t0)
            done = []
            for result in worker.process(items, catch=skip):
                if isinstance(result, ImageFailed):
                    errors.add(result.sample, result.stage, result.error)  # type: ignore[union-attr]
                else:
                    done.append(result)
                bar.update()
                crash_point("bank-image")
            yield chunk, done


def assemble_bank(
    records: Iterable[ImageRecords],
    *,
    n_samples: int,
    skipped: int,
    class_names: list[str],
    parts: dict[str, Built],
    index_choice: Choice,
    method: MethodConfig,
    dataset_info: dict[str, Any],
    timer: Timer | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> Bank:
    """Records in canonical order (sorted here by split position) → outlier filter → index → ``Bank``."""
    timer = timer or Timer()
    ordered = sorted(records, key=lambda r: r.pos)
    full = [r for r in ordered if len(r.labels)]
    dim = full[0].vectors.shape[1] if full else 0
    all_vectors = np.concatenate([r.vectors for r in full]) if full else np.zeros((0, dim), np.float32)
    all_labels = np.concatenate([r.labels for r in full]) if full else np.zeros(0, np.int32)
    if len(all_labels) == 0:
        raise ModusegError(
            f"the bank is empty: no region of the {n_samples - skipped} images survived purification and the "
            f"{method.min_region_area}-pixel minimum; lower --set method.min_region_area or --set purifier.iterations"
        )
    keep = outlier_keep(all_vectors, all_labels, method.filter_ratio)
    kept_vectors, kept_labels = all_vectors[keep], all_labels[keep]
    # where each vector came from; a store written before provenance (records without regions) gives none
    traced = all(len(r.rles) == len(r.labels) and r.hw != (0, 0) for r in ordered)
    provenance = Provenance.from_records(ordered, keep, class_distances(all_vectors, all_labels)) if traced else None
    t0 = time.perf_counter()
    index = build("index", index_choice)
    index.component.add(kept_vectors, kept_labels)
    timer.add("index", time.perf_counter() - t0)

    def per_class(values: np.ndarray) -> dict[str, int]:
        ids, n = np.unique(values, return_counts=True)
        return {class_names[i]: int(c) for i, c in zip(ids, n, strict=True)}

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _created(),
        "components": {kind: parts[kind].describe() for kind in WORK_KINDS}
        | {"index": {"name": index_choice.name, "options": index.options.identity()}},
        "method": method.model_dump(mode="json"),
        "dataset": dataset_info,
        "class_names": class_names,
        "dim": int(kept_vectors.shape[1]),
        "counts": {
            "images": n_samples - skipped,
            "skipped_images": skipped,
            "regions": sum(r.regions for r in ordered),
            "regions_below_min_area": sum(r.small for r in ordered),
            "vectors_before_filter": per_class(all_labels),
            "vectors": per_class(kept_labels),
            "background_vectors": int((kept_labels == BACKGROUND).sum()),
        },
        "versions": package_versions(),
        "provenance": "provenance.jsonl" if provenance is not None else None,
    } | (extra_manifest or {})
    return Bank(kept_vectors, kept_labels, class_names, manifest, index.component, provenance=provenance)

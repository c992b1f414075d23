"""Streaming inference: decode ahead, and overlap post-processing with the next batch.

``stream_predictions`` is what ``run``, ``predict``, ``ablate`` and ``bench`` use. Three things
run at once:

* **decoding** — images are read by loader workers ahead of the model: a
  ``torch.utils.data.DataLoader`` (``loader_workers`` processes, pinned memory when a
  component runs on CUDA) when torch is already loaded by a component, otherwise a thread
  pool (PIL decoding releases the GIL);
* **proposals, encoding and pooling** of batch *i* on the caller's thread (the GPU work);
* **retrieval, vote, NMS and painting** of batch *i-1* on a worker thread, so the GPU is
  fed the next batch while the CPU finishes the previous one.

Results come out in input order and are identical to ``Predictor.predict_batch``.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from moduseg_core.contract.types import Prediction, Sample
from moduseg_core.files.failures import Failure
from moduseg_core.files.io import DEFAULT_MAX_IMAGE_PIXELS, read_image


class _Images:
    """Map-style dataset of decoded images (a module-level class: DataLoader workers pickle it)."""

    def __init__(self, samples: Sequence[Sample], max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
        self.paths = [s.image_path for s in samples]
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch

        try:
            return torch.from_numpy(np.array(read_image(self.paths[i], self.max_pixels)))  # a writable copy
        except Exception as exc:  # noqa: BLE001 (handed back as is: the DataLoader would wrap it in its traceback)
            _keep_cause(exc)
            return exc


def _keep_cause(exc: BaseException) -> None:
    """An exception crossing from a worker process loses its ``__cause__`` (pickling drops it); its
    traceback text rides along as a note, which MODUSEG_DEBUG=1 tracebacks show (not the one-line error)."""
    cause = exc.__cause__
    if cause is None or not hasattr(exc, "add_note"):  # add_note: Python 3.11+
        return
    import traceback

    text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip()
    exc.add_note(f"caused by (in a loader worker):\n{text}")


def _keep_list(batch: list) -> list:
    return batch


def load_images(
    samples: Sequence[Sample], *, workers: int = 2, pin_memory: bool = False, lookahead: int = 8,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, skip_errors: bool = False,
) -> Iterator[np.ndarray | Failure]:
    """Decoded images of ``samples`` in order, read ahead by ``workers`` (0 = in this thread);
    an image over ``max_pixels`` is refused (``read_image``). With ``skip_errors`` an image that
    cannot be read is yielded as its ``failures.Failure`` and the next ones still come."""
    if workers <= 0 or len(samples) <= 1:
        for sample in samples:
            if not skip_errors:
                yield read_image(sample.image_path, max_pixels)
                continue
            try:
                image = read_image(sample.image_path, max_pixels)
            except Exception as exc:  # noqa: BLE001 (skip_errors: any failure becomes this image's Failure)
                yield Failure("read", exc)
            else:
                yield image
        return
    if "torch" in sys.modules:  # a component already pays for torch: use its DataLoader
        from torch.utils.data import DataLoader

        dataset: Any = _Images(samples, max_pixels)  # a map-style dataset by duck typing (torch is imported lazily)
        loader = DataLoader(
            dataset,
            batch_size=1,
            num_workers=min(workers, len(samples), os.cpu_count() or 1),
            pin_memory=pin_memory,
            collate_fn=_keep_list,
            prefetch_factor=max(1, lookahead // workers),
        )
        for (item,) in loader:
            if isinstance(item, BaseException):
                if not skip_errors:
                    raise item
                yield Failure("read", item)
                continue
            yield item.numpy()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="moduseg-decode") as pool:
        pending: deque[Future] = deque()
        paths = iter(samples)
        for sample in paths:
            pending.append(pool.submit(read_image, sample.image_path, max_pixels))
            if len(pending) >= lookahead:
                break
        while pending:
            future = pending.popleft()
            nxt = next(paths, None)
            if nxt is not None:
                pending.append(pool.submit(read_image, nxt.image_path, max_pixels))
            error = future.exception() if skip_errors else None
            if error is not None:
                yield Failure("read", error)
                continue
            yield future.result()


def stream_predictions(
    predictor: Any,
    samples: Sequence[Sample],
    *,
    batch: int | None = None,
    workers: int | None = None,
    overlap: bool | None = None,
    pin_memory: bool | None = None,
    skip_errors: bool = False,
    window: int | None = None,
) -> Iterator[tuple[Sample, np.ndarray, Prediction]]:
    """``(sample, image, prediction)`` for every sample, in order (see the module doc).

    Batches are full whatever the image sizes: the images decoded ahead, up to ``window`` batches of them
    (``method.batch_window``), are grouped by the size the models take them at (``Predictor.batch_key``: the
    encoder's padded input size), and each batch is the oldest waiting image with the next ones of its size. Every
    image's arithmetic is the same in any batch of its size, so the results do not depend on the grouping; they
    come out in input order.

    With ``skip_errors`` an image that fails (reading, proposing, encoding, pooling, retrieval) comes
    out as ``(sample, image or None, Failure)`` and the others are unaffected: a batch that fails is
    redone one image at a time to find the image at fault."""
    method = predictor.method
    batch = batch or method.batch_images
    workers = method.loader_workers if workers is None else workers
    overlap = method.overlap if overlap is None else overlap
    window = method.batch_window if window is None else window
    if pin_memory is None:
        pin_memory = _uses_cuda(predictor)
    key_of = getattr(predictor, "batch_key", None) if window > 1 else None
    ahead = batch * window if key_of is not None else batch  # decoded images a batch may be drawn from
    images = load_images(
        samples, workers=workers, pin_memory=pin_memory, lookahead=2 * ahead,
        max_pixels=method.max_image_pixels, skip_errors=skip_errors,
    )
    # a predictor that does not stream (the caching one serves whole batches) gets no worker thread
    pool = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="moduseg-decide")
        if overlap and predictor.streams
        else None
    )
    pending: deque[tuple[list[int], tuple[list[Sample], list[Any], list[Future] | list[Prediction]]]] = deque()
    ready: dict[int, tuple[Sample, Any, Any]] = {}  # results of batches formed ahead of their turn
    position = 0  # the next sample to give back

    def finished(item: tuple[list[int], tuple]) -> Iterator[tuple[Sample, np.ndarray, Prediction]]:
        nonlocal position
        where, work = item
        for at, result in zip(where, _emit(work, skip_errors), strict=True):
            ready[at] = result
        while position in ready:
            yield ready.pop(position)
            position += 1

    try:
        for where, chunk, pixels in _batches(samples, images, predictor, batch, ahead, key_of):
            ids = [s.id for s in chunk]
            decided: Any
            if skip_errors:
                pixels, decided = _guarded_batch(predictor, pool, pixels, ids)
            elif pool is None:
                decided = predictor.predict_batch(pixels, ids)
            else:
                described = predictor.propose_and_describe(pixels, ids)
                decided = [
                    pool.submit(predictor.decide, image.shape[:2], *d)
                    for image, d in zip(pixels, described, strict=True)
                ]
            pending.append((where, (chunk, pixels, decided)))
            # keep one batch in flight: its post-processing overlaps the next batch's model work
            while len(pending) > (1 if pool is not None else 0):
                yield from finished(pending.popleft())
        while pending:
            yield from finished(pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


#: decoded bytes the grouping window may hold besides one batch (a folder of huge photos waits less far ahead)
WINDOW_BYTES = 512 * 2**20


def _batches(
    samples: Sequence[Sample], images: Iterator[Any], predictor: Any, batch: int, ahead: int, key_of: Any
) -> Iterator[tuple[list[int], list[Sample], list[Any]]]:
    """The batches to run, as ``(positions, samples, images)``: consecutive ones, or (with ``key_of``) each the
    oldest waiting image and the next waiting images of its key, from a window of at most ``ahead`` decoded images
    (and ``WINDOW_BYTES`` of them beyond one batch)."""
    waiting: list[tuple[int, Any, Any]] = []  # (position, image, key), in input order
    read, held = 0, 0
    while read < len(samples) or waiting:
        t0 = time.perf_counter()
        while read < len(samples) and len(waiting) < ahead and (held <= WINDOW_BYTES or len(waiting) < batch):
            image = next(images)  # a Failure only under skip_errors (then guarded)
            key = None if key_of is None else ("unread",) if isinstance(image, Failure) else _key(key_of, image, read)
            waiting.append((read, image, key))
            read += 1
            held += getattr(image, "nbytes", 0)
        predictor.timer.add("decode (waited)", time.perf_counter() - t0)
        oldest = waiting[0][2]
        members = [i for i, item in enumerate(waiting) if item[2] == oldest][:batch]
        taken = [waiting[i] for i in members]
        for i in reversed(members):
            del waiting[i]
        held -= sum(getattr(image, "nbytes", 0) for _, image, _ in taken)
        yield [at for at, _, _ in taken], [samples[at] for at, _, _ in taken], [image for _, image, _ in taken]


def _key(key_of: Any, image: np.ndarray, position: int) -> Any:
    """The image's batch key; an image whose key cannot be computed runs alone, and fails there as it would."""
    try:
        return key_of(image)
    except Exception:  # noqa: BLE001 (the same error is raised, or logged, when the image itself is processed)
        return ("alone", position)


def _guarded_batch(predictor: Any, pool: ThreadPoolExecutor | None, pixels: list, ids: list) -> tuple[list, list]:
    """One batch under ``skip_errors``: the images that were read go through the predictor together;
    if that fails, one at a time, each failure becoming a ``Failure``."""
    decided: list[Any] = [p if isinstance(p, Failure) else None for p in pixels]
    pixels = [None if isinstance(p, Failure) else p for p in pixels]
    good = [i for i, p in enumerate(pixels) if p is not None]

    def run(idx: list[int]) -> list[Any]:
        images, names = [pixels[i] for i in idx], [ids[i] for i in idx]
        if pool is None:
            return predictor.predict_batch(images, names)
        described = predictor.propose_and_describe(images, names)
        return [pool.submit(predictor.decide, image.shape[:2], *d) for image, d in zip(images, described, strict=True)]

    if good:
        try:
            results = run(good)
        except Exception:  # noqa: BLE001 (the batch failed: retried one image at a time just below)
            results = []
            for i in good:
                try:
                    results += run([i])
                except Exception as exc:  # noqa: BLE001 (skip_errors: any failure becomes this image's Failure)
                    results.append(Failure("predict", exc))
        for i, result in zip(good, results, strict=True):
            decided[i] = result
    return pixels, decided


def _emit(item, skip_errors: bool = False) -> Iterator[tuple[Sample, np.ndarray, Prediction]]:
    chunk, pixels, decided = item
    for sample, image, result in zip(chunk, pixels, decided, strict=True):
        if isinstance(result, Future):
            try:
                result = result.result()
            except Exception as exc:
                if not skip_errors:
                    raise
                result = Failure("predict", exc)
        yield sample, image, result


def _uses_cuda(predictor: Any) -> bool:
    for part in (predictor.encoder, predictor.proposer):
        device = getattr(part.component, "device", None)
        if device is not None and str(device).startswith("cuda"):
            return True
    return False

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
) -> Iterator[tuple[Sample, np.ndarray, Prediction]]:
    """``(sample, image, prediction)`` for every sample, in order (see the module doc).

    With ``skip_errors`` an image that fails (reading, proposing, encoding, pooling, retrieval) comes
    out as ``(sample, image or None, Failure)`` and the others are unaffected: a batch that fails is
    redone one image at a time to find the image at fault."""
    method = predictor.method
    batch = batch or method.batch_images
    workers = method.loader_workers if workers is None else workers
    overlap = method.overlap if overlap is None else overlap
    if pin_memory is None:
        pin_memory = _uses_cuda(predictor)
    images = load_images(
        samples, workers=workers, pin_memory=pin_memory, lookahead=2 * batch, max_pixels=method.max_image_pixels,
        skip_errors=skip_errors,
    )
    # a predictor that does not stream (the caching one serves whole batches) gets no worker thread
    pool = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="moduseg-decide")
        if overlap and predictor.streams
        else None
    )
    pending: deque[tuple[list[Sample], list[Any], list[Future] | list[Prediction]]] = deque()
    try:
        for start in range(0, len(samples), batch):
            chunk = list(samples[start : start + batch])
            ids = [s.id for s in chunk]
            t0 = time.perf_counter()
            pixels: list[Any] = [next(images) for _ in chunk]  # Failures only under skip_errors (then guarded)
            predictor.timer.add("decode (waited)", time.perf_counter() - t0)
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
            pending.append((chunk, pixels, decided))
            # keep one batch in flight: its post-processing overlaps the next batch's model work
            while len(pending) > (1 if pool is not None else 0):
                yield from _emit(pending.popleft(), skip_errors)
        while pending:
            yield from _emit(pending.popleft(), skip_errors)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


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

"""Inference on one batch of images: propose → encode → pool → retrieve → vote → NMS → rasterise."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from moduseg_core.contract.components import Built, Timer
from moduseg_core.contract.config import MethodConfig
from moduseg_core.contract.types import FeatureMap, Prediction, Proposals
from moduseg_core.method import nms_device
from moduseg_core.method.nms import mask_nms, rasterize
from moduseg_core.method.pooling import bounding_boxes, valid_rows
from moduseg_core.method.scale import downscale_image, paint_back, work_hw
from moduseg_core.method.vote import vote
from moduseg_core.pipeline.bank import Bank


class Predictor:
    """Holds the components and the bank; ``predict_batch`` labels images without any labels."""

    #: ``moduseg_core.pipeline.streaming`` may run ``propose_and_describe`` and ``decide`` on different threads
    streams = True

    def __init__(self, bank: Bank, proposer: Built, encoder: Built, aggregator: Built, method: MethodConfig):
        self.bank = bank
        self.proposer = proposer
        self.encoder = encoder
        self.aggregator = aggregator
        self.method = method
        self.timer = Timer()
        self.masks_seen = 0
        self.masks_kept = 0
        #: gather why each mask got its label (``Prediction.evidence``, ``pipeline/evidence.py``): only when asked
        self.explain = False

    def predict_batch(self, images: Sequence[np.ndarray], ids: Sequence[str | None]) -> list[Prediction]:
        described = self.propose_and_describe(images, ids)
        return [
            self.decide(image.shape[:2], masks, vectors)
            for image, (masks, vectors) in zip(images, described, strict=True)
        ]

    def propose_and_describe(
        self, images: Sequence[np.ndarray], ids: Sequence[str | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The model half of a batch (proposals, encoding, pooling): per image its masks and vectors.
        ``decide`` finishes each image; ``moduseg_core.pipeline.streaming`` runs the two halves overlapped.

        An image over ``method.work_pixels`` is handled at its working size (``method/scale.py``):
        its masks are at that size and ``decide`` paints them back to the image's size."""
        work, proposals = self.propose_batch(images, ids)
        return self.describe(work, ids, proposals)

    def propose_batch(
        self, images: Sequence[np.ndarray], ids: Sequence[str | None]
    ) -> tuple[list[np.ndarray], list[Proposals]]:
        """Each image at its working size, and its proposals."""
        images = [self.working_image(image) for image in images]
        t0 = time.perf_counter()
        found = propose_many(self.proposer.component, images, ids)
        proposals = [self.checked(proposals, image) for proposals, image in zip(found, images, strict=True)]
        self.timer.add("propose", time.perf_counter() - t0)
        return images, proposals

    def batch_key(self, image: np.ndarray) -> Hashable:
        """Images with equal keys go through the models in one forward pass: the encoder's padded input size at
        the image's working size (``batch_key`` of the encoder; None, all alike, when it has none). No model call,
        no copy of the image."""
        key_of = getattr(self.encoder.component, "batch_key", None)
        if key_of is None:
            return None
        hw = work_hw(image.shape[0], image.shape[1], self.method.work_pixels)
        return key_of(image if hw == image.shape[:2] else np.zeros((*hw, 3), np.uint8))

    def working_image(self, image: np.ndarray) -> np.ndarray:
        """The image itself, or its downscaled copy when it has more than ``method.work_pixels`` pixels."""
        hw = work_hw(image.shape[0], image.shape[1], self.method.work_pixels)
        if hw == image.shape[:2]:
            return image
        t0 = time.perf_counter()
        small = downscale_image(image, hw)
        self.timer.add("downscale", time.perf_counter() - t0)
        return small

    # -- the stages (a caching subclass overrides them one by one) ------------------------------

    def propose(self, image: np.ndarray, image_id: str | None) -> Proposals:
        """Class-agnostic masks of one image, those under ``min_mask_area`` dropped."""
        return self.checked(self.proposer.component.propose(image, image_id=image_id), image)

    def checked(self, found: Proposals, image: np.ndarray) -> Proposals:
        """A proposer's masks for ``image`` checked for its size, those under ``min_mask_area`` dropped."""
        if found.shape[1:] != image.shape[:2]:
            raise ValueError(
                f"proposer {self.proposer.name!r} returned {found.shape[1:]} masks for a {image.shape[:2]} image"
            )
        return found.select(found.areas() >= self.method.min_mask_area)  # (where the masks are: host or device)

    def describe(
        self, images: Sequence[np.ndarray], ids: Sequence[str | None], proposals: Sequence[Proposals]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Encode the images that have proposals (one batch) and pool every mask:
        per image the poolable masks ``bool K×H×W`` and their vectors ``float32 K×C``."""
        out = []
        for image, found, pooled in zip(images, proposals, self.pool_batch(images, proposals), strict=True):
            if pooled is None:
                out.append(_nothing(image.shape[:2]))
                continue
            ok, vectors = pooled
            out.append((decision_masks(found.select(ok)), vectors))
        return out

    def pool_batch(
        self, images: Sequence[np.ndarray], proposals: Sequence[Proposals]
    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Encode the images that have proposals (one batch) and pool every mask: per image
        ``(ok, vectors)`` (which masks could be pooled, ``bool N``, and their vectors), or None
        for an image without proposals."""
        t0 = time.perf_counter()
        need = [i for i, p in enumerate(proposals) if len(p)]
        encoded = self.encoder.component.encode_batch([images[i] for i in need]) if need else []
        features: dict[int, FeatureMap] = dict(zip(need, encoded, strict=True))
        self.timer.add("encode", time.perf_counter() - t0)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for i, found in enumerate(proposals):
            self.masks_seen += len(found)
            if i not in features:
                out.append(None)
                continue
            t0 = time.perf_counter()
            out.append(self.pool(features[i], self.pool_input(found)))
            self.timer.add("pool", time.perf_counter() - t0)
        return out

    def pool_input(self, found: Proposals) -> Any:
        """The masks as the aggregator takes them: the proposer's device tensor, as it is, for an aggregator that
        pools on a device (``takes_device_masks``), else the host array."""
        if found.device_masks is not None and getattr(self.aggregator.component, "takes_device_masks", False):
            return found.device_masks
        return found.masks

    def pool(self, features: FeatureMap, masks: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pool every mask: which rows could be pooled (``bool N``) and their vectors."""
        vectors = self.aggregator.component.aggregate(features, masks)
        ok = valid_rows(vectors)
        return ok, vectors[ok]

    def decide(self, image_hw: tuple[int, int], masks: Any, vectors: np.ndarray) -> Prediction:
        """Retrieve → vote → per-class NMS → paint; the class map has the image's size ``image_hw``
        (the masks have its working size, ``method.work_pixels``). ``masks`` is ``bool K×H×W`` on the host, or a
        torch tensor on the proposer's device: then NMS and painting run there (``method/nms_device.py``, the same
        answers) and only the class map comes back."""
        height, width = image_hw
        work = work_hw(height, width, self.method.work_pixels)
        on_device = not isinstance(masks, np.ndarray)
        if tuple(masks.shape[1:]) != work:
            raise ValueError(f"decide got {masks.shape[1:]} masks for a {image_hw} image (working size {work})")
        if not len(masks):
            return Prediction(
                np.zeros((height, width), np.int32), np.zeros((0, height, width), bool), np.zeros(0, np.int32),
                np.zeros(0, np.float32), evidence=_no_evidence(_host(masks)) if self.explain else None,
            )
        t0 = time.perf_counter()
        k = min(self.method.top_k, len(self.bank))
        found = self.bank.index.search(vectors, k)
        similarities, neighbour_labels = found
        labels, scores = vote(similarities, neighbour_labels)
        self.timer.add("retrieve", time.perf_counter() - t0)
        t0 = time.perf_counter()
        nms_iou, min_area = self.method.nms_iou, self.method.min_mask_area
        if on_device:
            keep = nms_device.mask_nms(masks, labels, scores, iou_threshold=nms_iou, min_area=min_area)
        else:
            boxes = bounding_boxes(masks)
            keep = mask_nms(masks, labels, scores, iou_threshold=nms_iou, min_area=min_area, boxes=boxes)
        evidence = None
        if self.explain:
            from moduseg_core.pipeline.evidence import gather

            evidence = gather(self.bank, _host(masks), vectors, found, labels, scores, keep)
        labels, scores = labels[keep], scores[keep]
        if on_device:
            painted = nms_device.rasterize(masks, labels, scores, work, order=keep)
        else:
            painted = rasterize(masks, labels, scores, work, boxes, order=keep)
        semantic = paint_back(painted, image_hw)
        self.timer.add("nms+paint", time.perf_counter() - t0)
        self.masks_kept += len(keep)
        # the kept masks are copied only if read
        return Prediction(semantic, masks, labels, scores, kept=keep, evidence=evidence)


def propose_many(component: object, images: Sequence[np.ndarray], ids: Sequence[str | None]) -> list[Proposals]:
    """Each image's proposals: through the component's ``propose_batch`` when it has one (several images per
    forward pass), else ``propose`` image by image. A batch that answers for another number of images is refused."""
    batch = getattr(component, "propose_batch", None)
    if batch is None or len(images) < 2:
        return [component.propose(image, image_id=image_id) for image, image_id in zip(images, ids, strict=True)]  # type: ignore[attr-defined]
    found = list(batch(list(images), list(ids)))
    if len(found) != len(images):
        raise ValueError(
            f"{type(component).__name__}.propose_batch returned {len(found)} results for {len(images)} images"
        )
    return found


def decision_masks(found: Proposals) -> Any:
    """The masks ``decide`` takes: a device proposer's tensor as it is (NMS and painting run there), else the host
    array."""
    return found.device_masks if found.device_masks is not None else found.masks


def _host(masks: Any) -> np.ndarray:
    return masks if isinstance(masks, np.ndarray) else np.ascontiguousarray(masks.cpu().numpy())


def _no_evidence(masks: np.ndarray) -> Any:
    from moduseg_core.pipeline.evidence import ImageEvidence

    return ImageEvidence(masks, [])


def _nothing(image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, *image_hw), bool), np.zeros((0, 0), np.float32)

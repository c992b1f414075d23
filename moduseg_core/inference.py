"""Inference on one batch of images: propose → encode → pool → retrieve → vote → NMS → rasterise."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .bank import Bank
from .components import Built, Timer
from .config import MethodConfig
from .method.nms import mask_nms, rasterize
from .method.pooling import valid_rows
from .method.vote import vote
from .types import FeatureMap, Prediction, Proposals


class Predictor:
    """Holds the components and the bank; ``predict_batch`` labels images without any labels."""

    def __init__(self, bank: Bank, proposer: Built, encoder: Built, aggregator: Built, method: MethodConfig):
        self.bank = bank
        self.proposer = proposer
        self.encoder = encoder
        self.aggregator = aggregator
        self.method = method
        self.timer = Timer()
        self.masks_seen = 0
        self.masks_kept = 0

    def predict_batch(self, images: Sequence[np.ndarray], ids: Sequence[str | None]) -> list[Prediction]:
        proposals: list[Proposals] = []
        t0 = time.perf_counter()
        for image, image_id in zip(images, ids):
            found = self.proposer.component.propose(image, image_id=image_id)
            if found.masks.shape[1:] != image.shape[:2]:
                raise ValueError(
                    f"proposer {self.proposer.name!r} returned {found.masks.shape[1:]} masks for a {image.shape[:2]} image"
                )
            area = found.masks.reshape(len(found), -1).sum(axis=1)
            proposals.append(found.select(area >= self.method.min_mask_area))
        self.timer.add("propose", time.perf_counter() - t0)

        t0 = time.perf_counter()
        need = [i for i, p in enumerate(proposals) if len(p)]
        encoded = self.encoder.component.encode_batch([images[i] for i in need]) if need else []
        features: dict[int, FeatureMap] = dict(zip(need, encoded))
        self.timer.add("encode", time.perf_counter() - t0)

        return [self._finish(image, proposals[i], features.get(i)) for i, image in enumerate(images)]

    def _finish(self, image: np.ndarray, proposals: Proposals, features: FeatureMap | None) -> Prediction:
        height, width = image.shape[:2]
        empty = Prediction(
            np.zeros((height, width), np.int32), np.zeros((0, height, width), bool), np.zeros(0, np.int32), np.zeros(0, np.float32)
        )
        self.masks_seen += len(proposals)
        if features is None or not len(proposals):
            return empty
        t0 = time.perf_counter()
        vectors = self.aggregator.component.aggregate(features, proposals.masks)
        ok = valid_rows(vectors)
        masks, vectors = proposals.masks[ok], vectors[ok]
        self.timer.add("pool", time.perf_counter() - t0)
        if not len(masks):
            return empty
        t0 = time.perf_counter()
        k = min(self.method.top_k, len(self.bank))
        similarities, neighbour_labels = self.bank.index.search(vectors, k)
        labels, scores = vote(similarities, neighbour_labels)
        self.timer.add("retrieve", time.perf_counter() - t0)
        t0 = time.perf_counter()
        keep = mask_nms(masks, labels, scores, iou_threshold=self.method.nms_iou, min_area=self.method.min_mask_area)
        masks, labels, scores = masks[keep], labels[keep], scores[keep]
        semantic = rasterize(masks, labels, scores, (height, width))
        self.timer.add("nms+paint", time.perf_counter() - t0)
        self.masks_kept += len(keep)
        return Prediction(semantic, masks, labels, scores)

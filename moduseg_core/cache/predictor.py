"""``CachingPredictor``: the ``Predictor`` whose stages read and fill the stage cache."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.cache.claims import fill
from moduseg_core.cache.formats import load_pooled, load_prediction, save_pooled, save_prediction
from moduseg_core.cache.store import StageCache, image_digest
from moduseg_core.contract.components import Built
from moduseg_core.contract.config import MethodConfig
from moduseg_core.contract.types import Prediction, Proposals
from moduseg_core.pipeline.bank import Bank
from moduseg_core.pipeline.inference import Predictor


class CachingPredictor(Predictor):
    """A ``Predictor`` whose stages read and fill the cache.

    ``propose`` and ``encode`` go through ``CachedProposer`` / ``CachedEncoder``;
    ``describe`` (encode + pool) is served from the ``pooled`` stage; ``predict_batch``
    serves whole predictions from the ``predictions`` stage. The bank is loaded on first
    use, so predictions that are all cached never touch it. The logic of every stage is
    the parent's: misses are handed to it unchanged.
    """

    #: whole batches go through ``predict_batch`` (the prediction cache sits there), not split in two
    streams = False

    def __init__(
        self,
        bank: Callable[[], Bank],
        proposer: Built,
        encoder: Built,
        aggregator: Built,
        method: MethodConfig,
        *,
        cache: StageCache,
        pooled_base: dict[str, Any],
        prediction_base: dict[str, Any],
    ):
        self._bank_loader = bank
        self._bank: Bank | None = None
        super().__init__(None, proposer, encoder, aggregator, method)  # type: ignore[arg-type]
        self.cache = cache
        self.pooled_base = pooled_base
        self.prediction_base = prediction_base
        self.computed: Counter[str] = Counter()

    @property
    def bank(self) -> Bank:
        if self._bank is None:
            self._bank = self._bank_loader()
        return self._bank

    @bank.setter
    def bank(self, value: Bank | None) -> None:
        self._bank = value

    @property
    def bank_loaded(self) -> bool:
        return self._bank is not None

    def prediction_key(self, image: np.ndarray, image_id: str | None) -> str:
        return self.cache.key("predictions", {**self.prediction_base, "image": image_digest(image), "id": image_id})

    def predict_batch(self, images: Sequence[np.ndarray], ids: Sequence[str | None]) -> list[Prediction]:
        keys = [self.prediction_key(image, image_id) for image, image_id in zip(images, ids, strict=True)]
        out: list[Prediction | None] = [None] * len(images)
        missing = []
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            hit = self.cache.get("predictions", key)
            if hit is None:
                missing.append(i)
                continue
            prediction, seen = load_prediction(hit)
            out[i] = prediction
            self.masks_seen += seen
            self.masks_kept += len(prediction.labels)
        self.timer.add("cached_predictions", time.perf_counter() - t0)
        def compute(mine: list[int]) -> None:
            # the parent's predict_batch, step by step, to keep how many masks each image saw
            todo = [images[i] for i in mine]
            todo_ids = [ids[i] for i in mine]
            work, proposals = self.propose_batch(todo, todo_ids)
            described = self.describe(work, todo_ids, proposals)
            for i, image, found, (masks, vectors) in zip(mine, todo, proposals, described, strict=True):
                prediction = self.decide(image.shape[:2], masks, vectors)
                with self.cache.put("predictions", keys[i]) as tmp:
                    save_prediction(tmp, prediction, len(found))
                out[i] = prediction
            self.computed["predictions"] += len(mine)

        def load(i: int, path: Path) -> None:  # predicted by another worker meanwhile
            self.cache.written_meanwhile("predictions")
            out[i], seen = load_prediction(path)
            self.masks_seen += seen
            self.masks_kept += len(out[i].labels)  # type: ignore[union-attr]

        fill([self.cache.path("predictions", key) for key in keys], missing, compute, load)
        return out  # type: ignore[return-value]

    def decide(self, image_hw: tuple[int, int], masks: np.ndarray, vectors: np.ndarray) -> Prediction:
        if len(masks):
            self.bank  # noqa: B018 — load (or build) the bank outside the retrieval timer
        return super().decide(image_hw, masks, vectors)

    def describe(
        self, images: Sequence[np.ndarray], ids: Sequence[str | None], proposals: Sequence[Proposals]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        keys = [
            self.cache.key("pooled", {**self.pooled_base, "image": image_digest(image), "id": image_id})
            for image, image_id in zip(images, ids, strict=True)
        ]
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(images)
        missing = []
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            hit = self.cache.get("pooled", key) if len(proposals[i]) else None
            if hit is None:
                missing.append(i)
                continue
            ok, vectors = load_pooled(hit)
            if len(ok) != len(proposals[i]):  # cannot happen for a valid key; recompute rather than trust it
                missing.append(i)
                continue
            self.masks_seen += len(proposals[i])
            out[i] = (proposals[i].select(ok).masks, vectors)
        self.timer.add("cached_pool", time.perf_counter() - t0)
        paths = [self.cache.path("pooled", key) for key in keys]

        def compute(mine: list[int]) -> None:
            pooled = self.pool_batch([images[i] for i in mine], [proposals[i] for i in mine])
            for i, result in zip(mine, pooled, strict=True):
                found = proposals[i]
                if result is None:  # no proposals: nothing to pool or to store
                    out[i] = (np.zeros((0, *images[i].shape[:2]), bool), np.zeros((0, 0), np.float32))
                    continue
                ok, vectors = result
                out[i] = (found.select(ok).masks, vectors)
                with self.cache.put("pooled", keys[i]) as tmp:
                    save_pooled(tmp, ok, vectors)
                self.computed["pooled"] += 1

        def load(i: int, path: Path) -> None:  # pooled by another worker meanwhile
            ok, vectors = load_pooled(path)
            if len(ok) != len(proposals[i]):
                compute([i])
                return
            self.cache.written_meanwhile("pooled")
            self.masks_seen += len(proposals[i])
            out[i] = (proposals[i].select(ok).masks, vectors)

        # no proposals (nothing is stored) or an entry that did not fit: computed here, unclaimed
        direct = [i for i in missing if not len(proposals[i]) or paths[i].exists()]
        if direct:
            compute(direct)
        fill(paths, [i for i in missing if i not in direct], compute, load)
        return out  # type: ignore[return-value]

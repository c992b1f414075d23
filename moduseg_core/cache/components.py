"""Components served from the stage cache: built only when an entry is missing, so a fully
cached stage never loads a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.cache.claims import fill
from moduseg_core.cache.formats import load_features, load_proposals, save_features, save_proposals
from moduseg_core.cache.store import StageCache, component_key, image_digest
from moduseg_core.contract.components import Built
from moduseg_core.contract.config import Choice
from moduseg_core.contract.types import FeatureMap, Proposals


class _Lazy:
    """Builds the wrapped component on first use, so a fully cached stage never loads a model."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._inner: Any = None

    @property
    def inner(self) -> Any:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    @property
    def built(self) -> bool:
        return self._inner is not None


class CachedProposer(_Lazy):
    """A ``MaskProposer`` serving ``propose`` from the ``proposals`` stage."""

    def __init__(self, cache: StageCache, choice: Choice, build: Callable[[], Any]):
        super().__init__(build)
        self.cache = cache
        self.identity = component_key("proposer", choice)
        self.computed = 0

    def entry_key(self, image: np.ndarray, image_id: str | None) -> str:
        return self.cache.key("proposals", {"proposer": self.identity, "image": image_digest(image), "id": image_id})

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        return self.propose_batch([image], [image_id])[0]

    def propose_batch(self, images: Sequence[np.ndarray], image_ids: Sequence[str | None]) -> list[Proposals]:
        """Each image's proposals from the ``proposals`` stage; the misses go to the proposer together (its
        ``propose_batch`` when it has one, ``propose`` for a single miss) and are stored."""
        from moduseg_core.pipeline.inference import propose_many

        keys = [self.entry_key(image, image_id) for image, image_id in zip(images, image_ids, strict=True)]
        out: list[Proposals | None] = []
        missing = []
        for i, key in enumerate(keys):
            hit = self.cache.get("proposals", key)
            out.append(load_proposals(hit) if hit is not None else None)
            if hit is None:
                missing.append(i)
        def compute(mine: list[int]) -> None:
            found = propose_many(self.inner, [images[i] for i in mine], [image_ids[i] for i in mine])
            for i, proposals in zip(mine, found, strict=True):
                self.computed += 1
                with self.cache.put("proposals", keys[i]) as tmp:
                    save_proposals(tmp, proposals)
                out[i] = proposals

        def load(i: int, path: Path) -> None:  # written by another worker meanwhile
            self.cache.written_meanwhile("proposals")
            out[i] = load_proposals(path)

        fill([self.cache.path("proposals", key) for key in keys], missing, compute, load)
        return out  # type: ignore[return-value]


class CachedEncoder(_Lazy):
    """A ``FeatureEncoder`` serving patch tokens from the ``features`` stage; only misses are encoded."""

    def __init__(self, cache: StageCache, choice: Choice, build: Callable[[], Any]):
        super().__init__(build)
        self.cache = cache
        self.identity = component_key("encoder", choice)
        #: images the wrapped encoder actually ran on / images served from the cache
        self.passes = 0
        self.served = 0

    def entry_key(self, image: np.ndarray) -> str:
        return self.cache.key("features", {"encoder": self.identity, "image": image_digest(image)})

    def encode(self, image: np.ndarray) -> FeatureMap:
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[FeatureMap]:
        images = list(images)
        keys = [self.entry_key(image) for image in images]
        out: list[FeatureMap | None] = [None] * len(images)
        missing = []
        for i, key in enumerate(keys):
            hit = self.cache.get("features", key)
            if hit is None:
                missing.append(i)
            else:
                out[i] = load_features(hit)
                self.served += 1
        def compute(mine: list[int]) -> None:
            encoded = self.inner.encode_batch([images[i] for i in mine])
            self.passes += len(mine)
            for i, features in zip(mine, encoded, strict=True):
                with self.cache.put("features", keys[i]) as tmp:
                    save_features(tmp, features)
                out[i] = features

        def load(i: int, path: Path) -> None:  # encoded by another worker meanwhile
            self.cache.written_meanwhile("features")
            out[i] = load_features(path)
            self.served += 1

        fill([self.cache.path("features", key) for key in keys], missing, compute, load)
        return out  # type: ignore[return-value]


def cached_built(kind: str, choice: Choice, component: Any) -> Built:
    from moduseg_core.contract.plugins import build_options

    return Built(kind, choice.name, build_options(kind, choice.name, choice.options), component)

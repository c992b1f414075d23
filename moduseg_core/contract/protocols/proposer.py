"""MaskProposer: class-agnostic masks for an image."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from moduseg_core.contract.types import Proposals


@runtime_checkable
class MaskProposer(Protocol):
    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        """``image``: ``uint8 H×W×3`` RGB. ``image_id`` is given when known (precomputed proposers need it).

        A proposer may also define ``propose_batch(images, image_ids) -> list[Proposals]``, returning for each
        image what ``propose`` would (several images per forward pass); ``moduseg_core.pipeline.inference.propose_many``
        uses it when it is there."""
        ...

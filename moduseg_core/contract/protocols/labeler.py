"""Labeler: image + its image-level labels → a class map (pseudo mask)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from moduseg_core.contract.types import Sample


@runtime_checkable
class Labeler(Protocol):
    """Turns a training image and its image-level labels into a class map.

    A labeler that learns from the whole bank split (for example from which
    images share a label) may also define ``fit(samples: Sequence[Sample]) -> None``;
    the bank builder calls it once, before the first ``label`` call.
    """

    #: True when the labeler reads ground truth (an upper bound, not weak supervision).
    oracle: bool

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        """→ ``int32 H×W``: 0 background, 1..C classes, 255 ignore."""
        ...

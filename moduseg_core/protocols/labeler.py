"""Labeler: image + its image-level labels → a class map (pseudo mask)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..types import Sample


@runtime_checkable
class Labeler(Protocol):
    #: True when the labeler reads ground truth (an upper bound, not weak supervision).
    oracle: bool

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        """→ ``int32 H×W``: 0 background, 1..C classes, 255 ignore."""
        ...

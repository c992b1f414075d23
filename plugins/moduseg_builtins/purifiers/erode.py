"""Purifiers: ``erode`` (semantic boundary purification, the paper's) and ``none`` (ablation). numpy only."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from moduseg_core import Options
from moduseg_core.method.purify import erode


class ErodeOptions(Options):
    iterations: int = Field(20, ge=0, description="3×3 erosion passes (= Chebyshev radius in pixels)")


class ErodePurifier:
    """Semantic boundary purification (the paper's default)."""

    def __init__(self, options: ErodeOptions):
        self.iterations = options.iterations

    def purify(self, mask: np.ndarray) -> np.ndarray:
        return erode(mask, self.iterations)


class NoPurifier:
    """Keeps the region as it is (ablation)."""

    def purify(self, mask: np.ndarray) -> np.ndarray:
        return np.asarray(mask, dtype=bool).copy()

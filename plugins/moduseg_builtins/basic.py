"""Purifiers (``erode``, ``none``) and aggregators (``soft``, ``hard``): numpy only."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from moduseg_core import NoOptions, Options, hookimpl
from moduseg_core.method.pooling import patch_weights, pool
from moduseg_core.method.purify import erode
from moduseg_core.types import FeatureMap


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


class SoftAggregator:
    """Soft-masked pooling: each patch weighted by the fraction of its footprint under the mask."""

    def aggregate(self, features: FeatureMap, masks: np.ndarray) -> np.ndarray:
        return pool(features, patch_weights(masks, features.geometry))


class HardOptions(Options):
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="a patch counts (weight 1) when at least this fraction is covered")


class HardAggregator:
    """Hard pooling (ablation): weight 1 for patches covered at least ``threshold``, else 0."""

    def __init__(self, options: HardOptions):
        self.threshold = options.threshold

    def aggregate(self, features: FeatureMap, masks: np.ndarray) -> np.ndarray:
        weights = patch_weights(masks, features.geometry)
        return pool(features, (weights >= self.threshold).astype(np.float32))


@hookimpl
def register_purifiers(register):
    register("erode", ErodePurifier, options=ErodeOptions, summary="Square erosion, border counts as inside (paper)")
    register("none", lambda options: NoPurifier(), summary="No purification (ablation)")


@hookimpl
def register_aggregators(register):
    register("soft", lambda options: SoftAggregator(), options=NoOptions, summary="Area-weighted soft pooling (paper)")
    register("hard", HardAggregator, options=HardOptions, summary="Binary patch weights (ablation)")

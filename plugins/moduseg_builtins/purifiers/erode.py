"""Purifiers (``erode``, ``none``) and aggregators (``soft``, ``hard``): numpy only."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from moduseg_core import Options, hookimpl
from moduseg_core.method.pooling import patch_weights, pool
from moduseg_core.method.purify import erode
from moduseg_core.types import FeatureMap

from ._devices import GpuChoice, resolve_gpu_choice


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


class PoolOptions(Options):
    device: GpuChoice = Field(
        "cpu",
        description="'cpu' = numpy (box-restricted products); 'cuda'/'cuda:N' = torch on that GPU "
        "(weights and pooling as batched matrix products); 'auto' = a GPU if torch sees one, else numpy",
    )

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device"})



class SoftAggregator:
    """Soft-masked pooling: each patch weighted by the fraction of its footprint under the mask."""

    threshold: float | None = None

    def __init__(self, options: PoolOptions):
        self.device = _pool_device(options.device)

    def aggregate(self, features: FeatureMap, masks: np.ndarray) -> np.ndarray:
        if self.device is not None:
            from ._pool_torch import pool_on_device

            return pool_on_device(features, masks, self.device, self.threshold)
        weights = patch_weights(masks, features.geometry)
        if self.threshold is not None:
            weights = (weights >= self.threshold).astype(np.float32)
        return pool(features, weights)


class HardOptions(PoolOptions):
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="a patch counts (weight 1) when at least this fraction is covered")


class HardAggregator(SoftAggregator):
    """Hard pooling (ablation): weight 1 for patches covered at least ``threshold``, else 0."""

    def __init__(self, options: HardOptions):
        super().__init__(options)
        self.threshold = options.threshold


def _pool_device(device: str):
    """None = numpy; else the torch device to pool on."""
    target = resolve_gpu_choice(device, "aggregator")
    if target is None:
        return None
    import torch

    return torch.device(target)


@hookimpl
def register_purifiers(register):
    register("erode", ErodePurifier, options=ErodeOptions, summary="Square erosion, border counts as inside (paper)")
    register("none", lambda options: NoPurifier(), summary="No purification (ablation)")


@hookimpl
def register_aggregators(register):
    register("soft", SoftAggregator, options=PoolOptions, summary="Area-weighted soft pooling (paper)")
    register("hard", HardAggregator, options=HardOptions, summary="Binary patch weights (ablation)")

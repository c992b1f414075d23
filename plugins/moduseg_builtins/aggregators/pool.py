"""Aggregators: ``soft`` (area-weighted pooling, the paper's) and ``hard`` (binary patch weights, ablation).

The rule is ``moduseg_core.method.pooling`` (numpy, ``device=cpu``); ``device=cuda`` pools with
torch on that GPU (``_pool_torch``, imported only then).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from moduseg_core import Options
from moduseg_core.contract.types import FeatureMap
from moduseg_core.method.pooling import patch_weights, pool

from .._shared import Device, resolve_gpu_choice


class PoolOptions(Options):
    device: Device = Field(
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
        #: on a device, a GPU proposer's masks are pooled where they are (``Aggregator``)
        self.takes_device_masks = self.device is not None

    def aggregate(self, features: FeatureMap, masks: np.ndarray) -> np.ndarray:
        if self.device is not None:
            from ._pool_torch import pool_on_device

            return pool_on_device(features, masks, self.device, self.threshold)
        weights = patch_weights(masks, features.geometry)
        if self.threshold is not None:
            weights = (weights >= self.threshold).astype(np.float32)
        return pool(features, weights)


class HardOptions(PoolOptions):
    threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="a patch counts (weight 1) when at least this fraction is covered"
    )


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

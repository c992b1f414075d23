"""Soft / hard pooling on a torch device (imported only when an aggregator runs on a GPU).

The same rule as ``moduseg_core.method.pooling``: a patch's weight is the covered fraction
of its footprint, ``W = R · M · Cᵀ`` with ``R`` / ``C`` the row / column overlap matrices, so
all masks of an image become weights with two batched matrix products on the device and
are pooled with one more (``N×hw · hw×C``). Products run in float32 (no TF32), so the
vectors agree with the numpy path to float rounding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from moduseg_core.contract.types import FeatureMap, Geometry
from moduseg_core.method.pooling import _overlap_matrix

#: masks turned into weights per product, to bound device memory (chunk × H × W floats)
CHUNK = 64


@lru_cache(maxsize=16)
def _overlaps(geometry: Geometry, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    (height, width), (gh, gw) = geometry.image_hw, geometry.grid_hw
    rows = _overlap_matrix(height, geometry.resized_hw[0], gh, geometry.patch_size)
    cols = _overlap_matrix(width, geometry.resized_hw[1], gw, geometry.patch_size)
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def pool_on_device(features: FeatureMap, masks: np.ndarray | torch.Tensor, device: torch.device,
                   threshold: float | None = None) -> np.ndarray:
    """``float32 N×C`` pooled, L2-normalised vectors (zero rows where the rule skips or drops). ``masks``: a numpy
    array (copied to the device a chunk at a time) or a bool tensor (a proposer's, already on the device)."""
    on_device = isinstance(masks, torch.Tensor)
    if not on_device:
        masks = np.asarray(masks)
    n, height, width = masks.shape
    if (height, width) != features.geometry.image_hw:
        raise ValueError(f"mask size {height}×{width} does not match the encoded image {features.geometry.image_hw}")
    rows, cols = _overlaps(features.geometry, str(device))
    tokens = torch.from_numpy(np.ascontiguousarray(features.tokens.reshape(-1, features.dim))).to(device, torch.float32)
    pinned = device.type == "cuda"
    out = torch.empty((n, features.dim), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, n, CHUNK):
            if on_device:
                part = masks[start : start + CHUNK].to(device)
            else:
                part = torch.from_numpy(masks[start : start + CHUNK])
                part = (part.pin_memory() if pinned else part).to(device, non_blocking=pinned)
            weights = rows @ part.to(torch.float32) @ cols.T  # c×gh×gw
            if threshold is not None:
                weights = (weights >= threshold).to(torch.float32)
            flat = weights.reshape(len(part), -1)
            total = flat.sum(dim=1)
            pooled = (flat @ tokens) / (total[:, None] + 1e-8)
            norms = pooled.norm(dim=1)
            ok = (total >= 1e-6) & torch.isfinite(pooled).all(dim=1) & (norms >= 1e-6)
            pooled = torch.where(ok[:, None], pooled / norms.clamp_min(1e-6)[:, None], torch.zeros_like(pooled))
            out[start : start + len(part)] = pooled
    return out.cpu().numpy()

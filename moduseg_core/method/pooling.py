"""Patch weights for pixel masks and masked pooling of patch tokens."""

from __future__ import annotations

import numpy as np

from ..types import FeatureMap, Geometry

#: Masks are turned into patch weights in chunks of this many, to bound memory.
CHUNK = 32


def _overlap_matrix(n_pixels: int, n_resized: int, n_cells: int, patch: int) -> np.ndarray:
    """``n_cells × n_pixels``: fraction of each patch's footprint covered by each image pixel row/column.

    Patch i spans ``[i·p, (i+1)·p)`` in resized coordinates, i.e. ``[i·p·s, (i+1)·p·s)``
    in image pixels with ``s = n_pixels / n_resized``; the part past the image is padding.
    """
    scale = n_pixels / n_resized
    starts = np.arange(n_cells, dtype=np.float64)[:, None] * patch * scale
    ends = starts + patch * scale
    pix = np.arange(n_pixels, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(ends, pix + 1) - np.maximum(starts, pix), 0.0, None)
    return (overlap / (patch * scale)).astype(np.float32)


def patch_weights(masks: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``bool N×H×W`` → ``float32 N×h×w``: the covered fraction of each patch footprint.

    With no resize this equals OpenCV ``INTER_AREA`` resizing of the zero-padded
    mask to the patch grid.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be N×H×W, got shape {masks.shape}")
    n, height, width = masks.shape
    if (height, width) != geometry.image_hw:
        raise ValueError(f"mask size {height}×{width} does not match the encoded image {geometry.image_hw}")
    gh, gw = geometry.grid_hw
    rows = _overlap_matrix(height, geometry.resized_hw[0], gh, geometry.patch_size)  # gh×H
    cols = _overlap_matrix(width, geometry.resized_hw[1], gw, geometry.patch_size)  # gw×W
    out = np.empty((n, gh, gw), np.float32)
    for start in range(0, n, CHUNK):
        chunk = masks[start : start + CHUNK].astype(np.float32)
        across = chunk.reshape(-1, width) @ cols.T  # (c·H)×gw
        across = across.reshape(len(chunk), height, gw)
        out[start : start + len(chunk)] = np.einsum("ih,nhw->niw", rows, across, optimize=True)
    return out


def pool(features: FeatureMap, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of tokens per mask, L2-normalised; unusable rows are all zero.

    ``f = normalize(Σ w_p·t_p / (Σ w_p + 1e-8))``; skipped when ``Σ w_p < 1e-6``;
    dropped when non-finite or of norm < 1e-6.
    """
    n = weights.shape[0]
    tokens = features.tokens.reshape(-1, features.dim)
    flat = weights.reshape(n, -1).astype(np.float32)
    total = flat.sum(axis=1)
    pooled = (flat @ tokens) / (total[:, None] + 1e-8)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(pooled, axis=1)
        ok = (total >= 1e-6) & np.isfinite(pooled).all(axis=1) & (norms >= 1e-6)
        out = np.zeros_like(pooled, dtype=np.float32)
        out[ok] = pooled[ok] / norms[ok, None]
    return out


def valid_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows an aggregator could pool (non-zero)."""
    return np.abs(vectors).sum(axis=1) > 0

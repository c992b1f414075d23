"""Patch weights for pixel masks and masked pooling of patch tokens."""

from __future__ import annotations

import numpy as np

from moduseg_core.contract.types import FeatureMap, Geometry


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


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """``bool N×H×W`` → ``int64 N×4`` half-open boxes ``(y0, y1, x0, x1)``; empty masks get ``(0, 0, 0, 0)``."""
    n, height, width = masks.shape
    rows = np.any(masks, axis=2)  # N×H: one contiguous pass
    filled = np.any(rows, axis=1)
    boxes = np.zeros((n, 4), np.int64)
    boxes[filled, 0] = rows[filled].argmax(axis=1)
    boxes[filled, 1] = height - rows[filled][:, ::-1].argmax(axis=1)
    for i in np.flatnonzero(filled).tolist():  # columns only within each mask's rows
        cols = np.any(masks[i, boxes[i, 0] : boxes[i, 1]], axis=0)
        boxes[i, 2] = cols.argmax()
        boxes[i, 3] = width - cols[::-1].argmax()
    return boxes


def patch_weights(masks: np.ndarray, geometry: Geometry, boxes: np.ndarray | None = None) -> np.ndarray:
    """``bool N×H×W`` → ``float32 N×h×w``: the covered fraction of each patch footprint.

    With no resize this equals OpenCV ``INTER_AREA`` resizing of the zero-padded
    mask to the patch grid. The footprint weights are separable (row overlaps ×
    column overlaps), so each mask costs two small matrix products restricted to
    its bounding box (``boxes``, from :func:`bounding_boxes` when not given) and to
    the patch cells that box touches: proposals cover a small part of the image, so
    this is far cheaper than products over the whole image.
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
    # The patch cells each pixel row / column touches: the first and one past the last.
    row_cells = _cell_ranges(rows)
    col_cells = _cell_ranges(cols)
    boxes = bounding_boxes(masks) if boxes is None else boxes
    out = np.zeros((n, gh, gw), np.float32)
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        if y1 <= y0 or x1 <= x0:
            continue
        cy0, cy1 = row_cells[0][y0], row_cells[1][y1 - 1]
        cx0, cx1 = col_cells[0][x0], col_cells[1][x1 - 1]
        crop = masks[i, y0:y1, x0:x1].astype(np.float32)
        out[i, cy0:cy1, cx0:cx1] = rows[cy0:cy1, y0:y1] @ crop @ cols[cx0:cx1, x0:x1].T
    return out


def _cell_ranges(overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For an ``cells × pixels`` overlap matrix: per pixel, the first cell it touches and one past
    the last (pixels past the resized extent touch none and get an empty range)."""
    touched = overlap > 0
    any_cell = touched.any(axis=0)
    first = np.where(any_cell, touched.argmax(axis=0), 0)
    last = np.where(any_cell, len(overlap) - touched[::-1].argmax(axis=0), 0)
    # Ranges over a span of pixels: min of firsts / max of lasts; both are monotone in the pixel.
    return first, np.maximum.accumulate(last)


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

"""The working size of very large images (``method.work_pixels``, docs/formats.md "Huge images").

An image with more than ``work_pixels`` pixels is proposed, encoded, pooled (and, in a bank,
labelled and purified) on a copy downscaled to at most that many pixels; its class map is
scaled back to the image's size with nearest neighbour. Proposals are ``N×H×W`` booleans, so
this bounds their memory to ``N·work_pixels`` bytes whatever the photo's size. An image at or
under the limit is returned as it is (the same array): the method is unchanged for it.
"""

from __future__ import annotations

import math

import numpy as np


def work_hw(height: int, width: int, work_pixels: int | None) -> tuple[int, int]:
    """The size an image of ``height×width`` is processed at: itself when it has at most
    ``work_pixels`` pixels (or the limit is None), else the largest aspect-preserving size
    (floors of ``side·s``) with at most ``work_pixels`` pixels."""
    if work_pixels is None or height * width <= work_pixels:
        return height, width
    scale = math.sqrt(work_pixels / (height * width))
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    while new_h * new_w > work_pixels:  # float rounding at the edge
        if new_h >= new_w:
            new_h -= 1
        else:
            new_w -= 1
    return new_h, new_w


def downscale_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``uint8 H×W×3`` → ``hw`` (Pillow's antialiased bilinear); the image itself when it already has that size."""
    if image.shape[:2] == tuple(hw):
        return image
    from PIL import Image

    bilinear = Image.BILINEAR  # type: ignore[attr-defined]  # Pillow >= 9 has it; its stubs list Resampling only
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((hw[1], hw[0]), bilinear))


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each output row (column), the input row whose span holds its centre."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp), n_in - 1)


def resize_nearest(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A label map ``h×w`` → ``hw`` by nearest neighbour (pixel centres); the map itself when it has that size."""
    h, w = labels.shape
    if (h, w) == tuple(hw):
        return labels
    rows = _nearest_index(hw[0], h)
    cols = _nearest_index(hw[1], w)
    return labels[rows[:, None], cols[None, :]]


def paint_back(semantic: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """A class map painted at the working size → the image's size (nearest); ``uint8`` when the ids
    fit (a quarter of the memory of int32 on a huge photo)."""
    if semantic.shape == tuple(image_hw):
        return semantic
    if semantic.size and 0 <= int(semantic.min()) and int(semantic.max()) <= 255:
        semantic = semantic.astype(np.uint8)
    return resize_nearest(semantic, image_hw)

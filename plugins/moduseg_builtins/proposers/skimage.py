"""Superpixel proposers from scikit-image: ``slic`` and ``felzenszwalb``.

Each run partitions the image; every segment of every run (one run per value of
``n_segments`` / ``scale``) becomes a class-agnostic proposal with score 1.0, so the
scales overlap. scikit-image is imported only when a proposer is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
from pydantic import Field

from moduseg_core import Options
from moduseg_core.contract.types import Proposals

from .._shared import check_image

MAX_SIDE_DESCRIPTION = (
    "run on a copy downscaled so its longer side is at most this (for speed), then upsample the segments to "
    "full size with nearest neighbour; null = full size"
)


class SlicOptions(Options):
    n_segments: list[Annotated[int, Field(ge=1)]] = Field(
        [25, 50, 100], min_length=1, description="one SLIC run per value (approximate segment count); all segments kept"
    )
    compactness: float = Field(10.0, gt=0, description="colour vs space trade-off; higher = squarer segments")
    sigma: float = Field(1.0, ge=0, description="Gaussian smoothing before segmentation (pixels of the run's image)")
    max_side: int | None = Field(640, ge=8, description=MAX_SIDE_DESCRIPTION)


class FelzenszwalbOptions(Options):
    scale: list[Annotated[float, Field(gt=0)]] = Field(
        [100.0, 300.0, 1000.0], min_length=1, description="one run per value; higher = larger segments"
    )
    sigma: float = Field(0.8, ge=0, description="Gaussian smoothing before segmentation")
    min_size: int = Field(50, ge=1, description="minimum segment size in pixels (of the run's image)")
    max_side: int | None = Field(640, ge=8, description=MAX_SIDE_DESCRIPTION)


def _downscale(image: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    from PIL import Image

    factor = max_side / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _upsample_nearest(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = labels.shape
    H, W = hw
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.intp), w - 1)
    return labels[rows[:, None], cols[None, :]]


def labels_to_masks(label_maps: list[np.ndarray]) -> np.ndarray:
    """Label maps (each a partition of H×W) → ``bool N×H×W``, one mask per distinct label of each map."""
    H, W = label_maps[0].shape
    compact = []
    for labels in label_maps:
        flat = labels.reshape(-1)
        if flat.min() >= 0 and np.bincount(flat).all():
            compact.append(flat)  # already 0..k-1 with no gaps (the usual case)
        else:
            _, inverse = np.unique(flat, return_inverse=True)
            compact.append(inverse.reshape(-1))
    total = sum(int(c.max()) + 1 for c in compact)
    masks = np.zeros((total, H * W), dtype=bool)
    pixels = np.arange(H * W)
    offset = 0
    for inverse in compact:
        masks[offset + inverse, pixels] = True
        offset += int(inverse.max()) + 1
    return masks.reshape(total, H, W)


class _SuperpixelProposer:
    name = "?"

    def __init__(self, runs: list[Callable[[np.ndarray], np.ndarray]], max_side: int | None):
        self._runs = runs
        self.max_side = max_side

    def segment(self, image: np.ndarray) -> list[np.ndarray]:
        """One full-size ``H×W`` label map per run."""
        image = check_image(image, f"proposer {self.name!r}", cast=True)
        small = _downscale(image, self.max_side)
        return [_upsample_nearest(np.asarray(run(small)), image.shape[:2]) for run in self._runs]

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        masks = labels_to_masks(self.segment(image))
        return Proposals(masks, np.ones(len(masks), dtype=np.float32))


class SlicProposer(_SuperpixelProposer):
    """SLIC superpixels at several segment counts."""

    name = "slic"

    def __init__(self, options: SlicOptions):
        from skimage.segmentation import slic

        def make(n: int):
            return lambda img: slic(
                img, n_segments=n, compactness=options.compactness, sigma=options.sigma, start_label=0, channel_axis=-1
            )

        self.options = options
        super().__init__([make(n) for n in options.n_segments], options.max_side)


class FelzenszwalbProposer(_SuperpixelProposer):
    """Felzenszwalb–Huttenlocher graph segmentation at several scales."""

    name = "felzenszwalb"

    def __init__(self, options: FelzenszwalbOptions):
        from skimage.segmentation import felzenszwalb

        def make(scale: float):
            return lambda img: felzenszwalb(
                img, scale=scale, sigma=options.sigma, min_size=options.min_size, channel_axis=-1
            )

        self.options = options
        super().__init__([make(s) for s in options.scale], options.max_side)

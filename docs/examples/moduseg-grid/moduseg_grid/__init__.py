"""moduseg-grid: an example third-party ModuSeg plugin.

It registers one MaskProposer, ``grid``, that cuts the image into regular tiles
at several scales. It is not a good proposer; it is a short, complete example of
the plugin API. Only ModuSeg's public names are used.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from moduseg_core import Options, Proposals, hookimpl

__version__ = "0.1.0"


class GridOptions(Options):
    """Options are a pydantic model deriving from moduseg_core.Options (unknown keys are refused)."""

    cells: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default=[2, 4, 8],
        min_length=1,
        description="tiles per side, one scale per entry; each scale partitions the image",
    )


class GridProposer:
    """Regular tiles: for each n in ``cells``, an n×n grid covering the whole image, score 1.0."""

    def __init__(self, options: GridOptions):
        self.cells = tuple(options.cells)

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        if image.ndim not in (2, 3):
            raise ValueError(f"grid proposer: expected an H×W×3 image, got shape {image.shape}")
        height, width = image.shape[:2]
        masks = []
        for n in self.cells:
            # n+1 integer edges per axis; consecutive tiles share an edge, so each scale is a partition.
            rows = (np.arange(n + 1) * height) // n
            cols = (np.arange(n + 1) * width) // n
            for top, bottom in zip(rows[:-1], rows[1:], strict=True):
                for left, right in zip(cols[:-1], cols[1:], strict=True):
                    if bottom == top or right == left:
                        continue  # more tiles than pixels along an axis: skip the empty ones
                    mask = np.zeros((height, width), dtype=bool)
                    mask[top:bottom, left:right] = True
                    masks.append(mask)
        if not masks:
            return Proposals.empty(height, width)
        stacked = np.stack(masks)
        return Proposals(stacked, np.ones(len(stacked), dtype=np.float32))


def make_grid(options: GridOptions) -> GridProposer:
    # A factory receives the parsed options. Heavy imports (torch, a model...) belong
    # here, not at module level, so that listing plugins stays fast.
    return GridProposer(options)


@hookimpl
def register_proposers(register):
    register(
        "grid",
        make_grid,
        options=GridOptions,
        summary="Regular tiles at several scales (example plugin)",
    )

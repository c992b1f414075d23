"""Aggregator: pools patch tokens under masks into one vector per mask."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from moduseg_core.contract.types import FeatureMap


@runtime_checkable
class Aggregator(Protocol):
    """An aggregator that pools on a device may say so with a true ``takes_device_masks`` attribute: the
    pipeline then passes a GPU proposer's masks as they are (a torch ``bool`` tensor on the proposer's device,
    ``Proposals.device_masks``) instead of copying them to the host and back. Without it, masks are numpy."""

    def aggregate(self, features: FeatureMap, masks: np.ndarray) -> np.ndarray:
        """``masks``: ``bool N×H×W`` in image pixels → ``float32 N×C``, rows L2-normalised.

        A mask that cannot be pooled (no weight under it, non-finite or vanishing
        result) gives an all-zero row; callers drop those rows.
        """
        ...

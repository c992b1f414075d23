"""FeatureEncoder: a frozen backbone giving dense patch tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from moduseg_core.contract.types import FeatureMap


@runtime_checkable
class FeatureEncoder(Protocol):
    def encode(self, image: np.ndarray) -> FeatureMap:
        """``image``: ``uint8 H×W×3`` RGB → patch tokens plus the pixel→patch geometry."""
        ...

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[FeatureMap]:
        """Many images at once (batched on the device where sizes allow)."""
        ...

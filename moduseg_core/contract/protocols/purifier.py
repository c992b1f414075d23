"""Purifier: shrinks a class region to its confident interior before pooling."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Purifier(Protocol):
    def purify(self, mask: np.ndarray) -> np.ndarray:
        """``bool H×W`` → ``bool H×W``."""
        ...

"""BankIndex: nearest-neighbour search over labelled, L2-normalised vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from moduseg_core.contract.types import SearchResult


@runtime_checkable
class BankIndex(Protocol):
    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """``vectors float32 N×C`` (L2-normalised), ``labels int N``."""
        ...

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Inner-product top-k; ``k`` must not exceed ``len(self)``."""
        ...

    def save(self, directory: Path) -> None:
        ...

    def load(self, directory: Path) -> None:
        ...

    def __len__(self) -> int:
        ...

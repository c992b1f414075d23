"""moduseg-shelf: a bank index as a plugin author writes one from docs/plugins.md alone.

``shelf`` keeps the bank's vectors in memory and searches them by brute force; ``save(directory)`` writes its
two files straight into ``directory``, which the docs promise exists. ``fail_in`` names a method that raises
instead of working, so that tests can see how moduseg reports a plugin's failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from moduseg_core import Options, SearchResult, hookimpl


class ShelfOptions(Options):
    fail_in: Literal["", "add", "search", "save", "load"] = Field("", description="a method that raises (tests)")


class ShelfIndex:
    def __init__(self, options: ShelfOptions):
        self.fail_in = options.fail_in
        self.vectors = np.zeros((0, 0), np.float32)
        self.labels = np.zeros(0, np.int32)

    def _maybe_fail(self, method: str) -> None:
        if self.fail_in == method:
            raise RuntimeError(f"the shelf collapsed in {method} (fail_in={method!r})")

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        self._maybe_fail("add")
        vectors = np.asarray(vectors, np.float32)
        self.vectors = vectors if not len(self.vectors) else np.concatenate([self.vectors, vectors])
        self.labels = np.concatenate([self.labels, np.asarray(labels, np.int32)])

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        self._maybe_fail("search")
        sims = np.asarray(queries, np.float32) @ self.vectors.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return SearchResult(np.take_along_axis(sims, order, axis=1), self.labels[order])

    def save(self, directory: Path) -> None:
        self._maybe_fail("save")
        np.save(Path(directory) / "shelf_vectors.npy", self.vectors)
        np.save(Path(directory) / "shelf_labels.npy", self.labels)

    def load(self, directory: Path) -> None:
        self._maybe_fail("load")
        self.vectors = np.load(Path(directory) / "shelf_vectors.npy")
        self.labels = np.load(Path(directory) / "shelf_labels.npy")

    def __len__(self) -> int:
        return len(self.labels)


@hookimpl
def register_indexes(register):
    register("shelf", ShelfIndex, options=ShelfOptions, summary="Brute-force search kept on a shelf (a test plugin)")

"""Majority vote over retrieved neighbours."""

from __future__ import annotations

import numpy as np


def vote(similarities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Q×k`` neighbours → (label ``int32 Q``, score ``float32 Q``).

    The label with most neighbours wins; a tie goes to the larger sum of
    similarities (then to the smaller label id). Score = mean similarity of the
    winner's neighbours.
    """
    q, k = labels.shape
    if q == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    n_labels = int(labels.max()) + 1
    rows = np.repeat(np.arange(q), k)
    counts = np.zeros((q, n_labels), np.int64)
    sums = np.zeros((q, n_labels), np.float64)
    np.add.at(counts, (rows, labels.ravel()), 1)
    np.add.at(sums, (rows, labels.ravel()), similarities.ravel().astype(np.float64))
    best = counts.max(axis=1, keepdims=True)
    tie_sums = np.where(counts == best, sums, -np.inf)
    winner = tie_sums.argmax(axis=1)
    picked = np.arange(q)
    score = sums[picked, winner] / counts[picked, winner]
    return winner.astype(np.int32), score.astype(np.float32)

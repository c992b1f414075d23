"""Numbers about a bank itself, before any proposal: a 2-D map of its vectors (PCA) and the class confusion of
leave-one-out k-NN over it (each vector voted on by its k nearest other vectors, with the method's vote).
numpy only; used by the bank atlas (``report_html/atlas.py``)."""

from __future__ import annotations

import numpy as np

from moduseg_core.files.progress import Bar
from moduseg_core.method.vote import vote


def pca_2d(vectors: np.ndarray, fit_rows: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """The vectors projected on their first two principal axes (float64 N×2), and the share of the variance
    each axis explains. Fitted on at most ``fit_rows`` rows (evenly spaced), projected for all."""
    x = np.asarray(vectors, np.float64)
    if len(x) == 0:
        return np.zeros((0, 2)), np.zeros(2)
    fit = x[np.linspace(0, len(x) - 1, min(len(x), fit_rows)).astype(np.int64)]
    mean = fit.mean(axis=0)
    _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], x.shape[1]))])
    for i in range(2):  # a fixed sign: the largest loading positive, so a rebuild draws the same map
        if axes[i, np.argmax(np.abs(axes[i]))] < 0:
            axes[i] = -axes[i]
    variance = s**2
    share = variance[:2] / max(variance.sum(), 1e-12)
    return (x - mean) @ axes.T, np.pad(share, (0, 2 - len(share)))


def loo_knn(vectors: np.ndarray, labels: np.ndarray, k: int, n_classes: int, block: int = 1024) -> np.ndarray:
    """Leave-one-out k-NN over the bank: ``n_classes × n_classes`` counts, rows the vector's class, columns the
    class its k nearest *other* vectors vote for (inner product, the method's vote and tie rule)."""
    n = len(labels)
    matrix = np.zeros((n_classes, n_classes), np.int64)
    k = min(k, n - 1)
    if k < 1:
        return matrix
    x = np.asarray(vectors, np.float32)
    with Bar(n, "atlas k-NN") as bar:
        for start in range(0, n, block):
            stop = min(n, start + block)
            scores = x[start:stop] @ x.T
            scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            sims = np.take_along_axis(scores, part, axis=1)
            order = np.lexsort((part, -sims), axis=1)
            rows = np.take_along_axis(part, order, axis=1)
            predicted, _ = vote(np.take_along_axis(sims, order, axis=1), labels[rows].astype(np.int64))
            np.add.at(matrix, (labels[start:stop].astype(np.int64), predicted.astype(np.int64)), 1)
            bar.update(stop - start)
    return matrix

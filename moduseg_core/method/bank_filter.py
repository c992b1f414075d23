"""The per-class outlier filter applied before indexing."""

from __future__ import annotations

import math

import numpy as np

from moduseg_core.contract.types import BACKGROUND


def outlier_keep(vectors: np.ndarray, labels: np.ndarray, ratio: float = 0.25) -> np.ndarray:
    """Boolean keep-mask: per foreground class drop the ``floor(ratio·n)`` vectors farthest
    (Euclidean) from the class mean; background keeps all."""
    keep = np.ones(len(labels), bool)
    for label in np.unique(labels):
        if label == BACKGROUND:
            continue
        idx = np.flatnonzero(labels == label)
        drop = math.floor(ratio * len(idx))
        if drop == 0:
            continue
        members = vectors[idx].astype(np.float64)
        dist = np.linalg.norm(members - members.mean(axis=0), axis=1)
        farthest = idx[np.argsort(-dist, kind="stable")[:drop]]
        keep[farthest] = False
    return keep

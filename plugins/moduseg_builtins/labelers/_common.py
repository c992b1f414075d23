"""Helpers shared by the image-level-label labelers (numpy only).

- ``build_part``: a proposer or encoder named in a labeler's own options, with one-line errors
  that say which labeler option to fix;
- ``check_labels``: image-level labels a labeler can trust (images: ``moduseg_builtins._shared.check_image``);
- ``majority_correct``: the paper's "map correction" (every proposal takes its majority class).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moduseg_core import ModusegError
from moduseg_core.contract.types import IGNORE_INDEX, Proposals, Sample


def build_part(labeler: str, kind: str, option: str, name: str, options: dict[str, Any]) -> Any:
    """``get_component(kind, name, **options)`` whose errors name the labeler option to change."""
    from moduseg_core.contract.plugins import get_component, get_spec, list_components

    try:
        get_spec(kind, name)
    except ModusegError as exc:
        names = ", ".join(s.name for s in list_components(kind)) or "none installed"
        raise ModusegError(
            f"labeler {labeler!r} option {option}={name!r} is not a registered {kind} (available: {names}); "
            f"fix it with --set labeler.{option}=NAME"
        ) from exc
    try:
        return get_component(kind, name, **options)
    except ModusegError as exc:
        raise ModusegError(f"labeler {labeler!r} {option}: {exc}") from exc


def check_labels(sample: Sample, n_classes: int, labeler: str, classes: str) -> tuple[int, ...]:
    """The sample's foreground labels, sorted and unique; ids outside 1..n_classes-1 are refused."""
    labels = tuple(sorted({int(c) for c in sample.labels}))
    bad = [c for c in labels if not 1 <= c < n_classes]
    if bad:
        raise ModusegError(
            f"labeler {labeler!r}: image {sample.id!r} has label {bad[0]}, but its classes ({classes!r}) allow "
            f"1..{n_classes - 1}; set --set labeler.classes to the dataset's classes"
        )
    return labels


def majority_correct(classes: np.ndarray, proposals: Proposals, min_score: float) -> np.ndarray:
    """Every proposal scoring ≥ ``min_score`` takes the most frequent class of ``classes`` under it.

    Majorities are read from the uncorrected map; proposals are painted largest first, so where
    two overlap the smaller one decides. Ignore pixels (255) do not vote and a proposal with
    only ignore under it changes nothing. Ties go to the smaller class id.
    """
    out = classes.copy()
    keep = np.flatnonzero(proposals.scores >= min_score)
    if not len(keep):
        return out
    masks = proposals.masks[keep]
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    flat = classes.reshape(-1)
    for i in np.argsort(-areas, kind="stable"):
        where = masks[i].reshape(-1)
        votes = flat[where]
        votes = votes[votes != IGNORE_INDEX]
        if not len(votes):
            continue
        out.reshape(-1)[where] = np.bincount(votes).argmax()
    return out


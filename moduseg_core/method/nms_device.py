"""Per-class mask NMS and score-ordered painting for masks that are torch tensors on a device.

The same rules as :mod:`moduseg_core.method.nms`, with the same answers: a proposer that leaves its masks on the
GPU (``Proposals.device_masks``) has them suppressed and painted there, and only the class map (and the kept rows'
indices) come back to the host. What is exact on the host stays exact here:

- intersections are counted as products of 0/1 float32 masks over slices of at most 2**20 pixels, so every partial
  sum is a whole number below 2**24 that float32 holds exactly; the slices add up in int64. Autocast is switched off
  around them, so a bfloat16 region around the pipeline cannot round a count;
- the N×N counts come back to the host (N masks of one label: kilobytes) and the greedy pass is the host's
  (:func:`~moduseg_core.method.nms.greedy_from_intersections`), in float64 from exact integers;
- painting orders the masks on the host by the same stable sort and gives each pixel the label of the first
  foreground mask covering it (``argmax`` returns the first maximal index), which is what painting one mask after
  the other onto unpainted pixels does.

torch is imported inside the functions: they only ever run on tensors the caller already made with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moduseg_core.contract.types import BACKGROUND
from moduseg_core.method.nms import greedy_from_intersections

#: pixels per slice of the intersection product (see the module doc)
SLICE = 2**20


def intersections(masks: Any) -> np.ndarray:
    """Exact pairwise intersection areas of a ``bool N×H×W`` tensor, as a host ``int64 N×N`` array."""
    n = int(masks.shape[0])
    out = np.zeros((n, n), np.int64)
    if n == 0:
        return out
    flat = masks.reshape(n, -1)
    step = max(1, min(SLICE, (2**26) // n))
    total = None
    with _no_autocast(masks):
        for start in range(0, int(flat.shape[1]), step):
            part = flat[:, start : start + step].float()
            counts = (part @ part.T).round().long()
            total = counts if total is None else total + counts
    return total.cpu().numpy().astype(np.int64) if total is not None else out


def areas(masks: Any) -> np.ndarray:
    """Pixel count of every mask (host ``int64 N``)."""
    return masks.sum(dim=(1, 2)).cpu().numpy().astype(np.int64)


def mask_nms(
    masks: Any, labels: np.ndarray, scores: np.ndarray, *, iou_threshold: float = 0.4, min_area: int = 300
) -> np.ndarray:
    """:func:`moduseg_core.method.nms.mask_nms` for a ``bool N×H×W`` tensor: the indices kept (host ``int64``)."""
    mask_areas = areas(masks)
    kept: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero((labels == label) & (mask_areas >= min_area))
        if len(idx) == 0:
            continue
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        rows = masks[_on_device(idx, masks)]
        kept.extend(idx[greedy_from_intersections(intersections(rows), mask_areas[idx], iou_threshold)].tolist())
    return np.array(sorted(kept), dtype=np.int64)


def rasterize(
    masks: Any, labels: np.ndarray, scores: np.ndarray, shape: tuple[int, int], order: np.ndarray | None = None
) -> np.ndarray:
    """:func:`moduseg_core.method.nms.rasterize` for a ``bool N×H×W`` tensor: the host ``int32`` class map.
    With ``order``, the i-th label / score belongs to ``masks[order[i]]``."""
    import torch

    by_score = np.argsort(-scores, kind="stable")
    ranked = by_score[labels[by_score] != BACKGROUND]  # background masks paint nothing
    if not len(ranked):
        return np.zeros(shape, np.int32)
    rows = ranked if order is None else np.asarray(order)[ranked]
    stack = masks[_on_device(rows, masks)]
    covered = stack.any(dim=0)
    first = stack.to(dtype=torch.uint8).argmax(dim=0)
    painted = _on_device(labels[ranked], masks)[first]
    semantic = painted.where(covered, painted.new_zeros(()))
    return semantic.cpu().numpy().astype(np.int32)


def _on_device(values: np.ndarray, like: Any) -> Any:
    """Integers (row indices, labels) as an int64 tensor on ``like``'s device."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values, np.int64)).to(like.device)


def _no_autocast(tensor: Any) -> Any:
    import torch

    return torch.autocast(device_type=tensor.device.type, enabled=False)

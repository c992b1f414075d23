"""The pieces of the ``corrclip`` rule, each a small function of tensors (docs/labelers.md has the rule).

- ``instance_map``: proposals → one id per pixel (0 = no mask), the higher score on top;
- ``merge_regions``: masks whose mean DINO features are close become one region (DBSCAN);
- ``scope_attention``: the DINO-correlation attention, restricted to within regions;
- ``semantic_attention_mask``: one extra class token per region that sees only its region;
- ``spatial_blocks``: which blocks the spatial branch averages;
- ``correct_by_regions``: every region of the instance map takes its most frequent class;
- ``resize_grid`` / ``symmetric_pad``: positional embeddings for another grid, padding of a window.

The region with the smallest id stands for "no mask" (it is 0 wherever some pixel has no mask):
it is not merged, its patches may attend to any patch correlated above the mean, and the map
correction leaves it as it is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core.contract.types import Proposals


def instance_map(proposals: Proposals, min_score: float) -> np.ndarray:
    """``int64 H×W``: 0 where no mask is, else ``1 +`` the mask's position among the kept masks (score ≥
    ``min_score``, in the proposer's order). Masks are painted by ascending score, so where masks overlap
    the higher score is on top."""
    keep = np.flatnonzero(np.asarray(proposals.scores) >= min_score)
    height, width = proposals.masks.shape[1:]
    out = np.zeros((height, width), np.int64)
    scores = np.asarray(proposals.scores)[keep]
    for rank in np.argsort(scores, kind="stable"):
        out[proposals.masks[keep[rank]]] = rank + 1
    return out


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer id map (``h×w``), as ``F.interpolate(mode="nearest")`` samples."""
    if tuple(ids.shape) == tuple(size):
        return ids
    return F.interpolate(ids[None, None].double(), size=size, mode="nearest")[0, 0].long()


def merge_regions(ids: torch.Tensor, feats: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """Regions of ``ids`` (``h×w``) whose mean features (``feats`` ``h×w×C``, L2-normalised rows) are close
    are given one new id. Runs when there are more than two regions; the smallest id is left out. Regions
    are clustered by DBSCAN on the precomputed distance ``max(S) - S`` of their normalised mean features'
    cosine similarities ``S``; a region in cluster ``c`` gets id ``offset + c`` (``offset`` above every id),
    DBSCAN noise keeps its id."""
    values = torch.unique(ids)
    if len(values) <= 2:
        return ids
    from sklearn.cluster import DBSCAN

    flat_ids = ids.reshape(-1)
    flat = feats.reshape(-1, feats.shape[-1]).float()
    members = values[:, None] == flat_ids[None, :]  # R×L
    means = (members.float() @ flat) / members.sum(dim=1, keepdim=True).float()
    means = F.normalize(means, dim=1)[1:]
    similarity = (means @ means.T).double().cpu().numpy()
    clusters = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(similarity.max() - similarity)
    offset = int(values.max()) + 1
    out = flat_ids.clone()
    for row, cluster in enumerate(clusters.tolist(), start=1):
        if cluster != -1:
            out[members[row]] = offset + cluster
    return out.reshape(ids.shape)


def scope_attention(similarity: torch.Tensor, ids: torch.Tensor, tau: float) -> torch.Tensor:
    """Row-softmax of ``tau·similarity`` (``L×L``) over the patches each patch may attend to: patches of its
    own region, and — when either patch lies in the smallest-id region ("no mask") — every patch whose
    similarity to it is above the mean of ``similarity``. ``ids`` is the region id per patch (``L``)."""
    first = ids.min()
    same = (ids[:, None] == ids[None, :]) & (ids[:, None] != first)
    loose = (ids[:, None] == first) | (ids[None, :] == first)
    allowed = same | (loose & (similarity > similarity.mean()))
    logits = torch.where(allowed, similarity * tau, torch.full_like(similarity, float("-inf")))
    return logits.softmax(dim=-1)


def semantic_attention_mask(regions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (0 allowed, −inf not) for the sequence ``[R region tokens, CLS, N patches]``
    with ``regions`` (``bool R×N``): the CLS and patch tokens attend as usual and never to the region
    tokens; region token r attends to the CLS token and to the patches of region r only."""
    count, patches = regions.shape
    size = count + 1 + patches
    allowed = torch.zeros((size, size), dtype=torch.bool, device=regions.device)
    allowed[count:, count:] = True
    allowed[:count, count] = True
    allowed[:count, count + 1 :] = regions
    mask = torch.zeros((size, size), dtype=dtype, device=regions.device)
    return mask.masked_fill(~allowed, float("-inf"))


def spatial_blocks(depth: int, count: int | None) -> range:
    """0-based indices of the blocks whose outputs the spatial branch averages: the ``count`` blocks that end
    just before the last two (released counts: 12 blocks → 5, 24 → 12, 32 → 28, otherwise depth − 4, at
    least 1); fewer when the tower has fewer blocks."""
    if depth < 3:
        raise ValueError(f"the spatial branch needs a vision tower of at least 3 blocks, this one has {depth}")
    if count is None:
        count = max(1, {12: 5, 24: 12, 32: 28}.get(depth, depth - 4))
    return range(max(0, depth - 2 - count), depth - 2)


def correct_by_regions(classes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Every region of ``ids`` but the smallest-id one takes its most frequent class (ties: the smaller id)."""
    out = classes.copy()
    values = np.unique(ids)
    for value in values[1:]:
        where = ids == value
        out[where] = np.bincount(classes[where]).argmax()
    return out


def resize_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A positional embedding grid ``C×g0×g1`` resized bicubically to ``size`` by the scale factors
    ``(size + 0.1) / g`` (what DINO's and the released CLIP's interpolation use); unchanged when equal."""
    g0, g1 = grid.shape[1:]
    if (g0, g1) == tuple(size):
        return grid
    scale = ((size[0] + 0.1) / g0, (size[1] + 0.1) / g1)
    out = F.interpolate(grid[None].float(), scale_factor=scale, mode="bicubic", align_corners=False)[0]
    if tuple(out.shape[1:]) != tuple(size):  # cannot happen for positive sizes; guards the arithmetic above
        raise AssertionError(f"resized grid {tuple(out.shape[1:])} != {size}")
    return out.to(grid.dtype)


def symmetric_pad(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding to the next multiple, the odd pixel on the right / bottom."""
    extra_w = -width % multiple
    extra_h = -height % multiple
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2

"""(a) of ``moduseg bench``: the released code's loop, re-created from its description
(shared/METHOD.md, "What the released code does slowly") to be timed beside ModuSeg's pipeline.

One image at a time — decode, propose, encode in float32 at batch 1 — then one mask at a time: pad
the mask, resize it to the patch grid with OpenCV ``INTER_AREA`` on the CPU, pool the tokens; one
exact search per image (a full sort of every similarity row, on the encoder's device); a
``Counter`` vote per mask; NMS with a ``logical_and`` / ``logical_or`` per pair; painting per mask.
It is deliberately the slow way: it is what (b) is measured against, and the two must paint the
same maps (``run_bench`` reports how many do).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from moduseg_core.contract.components import Built, Timer
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.types import BACKGROUND, Sample
from moduseg_core.files.io import read_image
from moduseg_core.files.progress import progress
from moduseg_core.method.pooling import patch_weights

LOOP_STAGES = ("decode", "propose", "encode", "pool", "retrieve", "nms+paint")


def loop_pool(cv2: Any, tokens: np.ndarray, geometry: Any, mask: np.ndarray) -> np.ndarray | None:
    gh, gw = geometry.grid_hw
    if geometry.resized_hw == geometry.image_hw:  # the released code: pad, then INTER_AREA to the grid
        ph, pw = geometry.padded_hw
        padded = np.zeros((ph, pw), np.float32)
        padded[: mask.shape[0], : mask.shape[1]] = mask
        weights = cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA)
    else:  # the released code never resizes; the footprint rule for resized input, still one mask at a time
        weights = patch_weights(mask[None], geometry)[0]
    if weights.sum() < 1e-6:
        return None
    pooled = (weights[..., None] * tokens).sum(axis=(0, 1)) / (weights.sum() + 1e-8)
    norm = np.linalg.norm(pooled)
    if not np.isfinite(pooled).all() or norm < 1e-6:
        return None
    return pooled / norm


def loop_search(vectors: np.ndarray, bank: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One exact search per image: every similarity row fully sorted (torch on the bank's device, or numpy)."""
    if isinstance(bank, np.ndarray):
        sims = vectors @ bank.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, order, axis=1), order
    import torch

    sims = torch.from_numpy(vectors).to(bank.device) @ bank.T
    values, ranked = torch.sort(sims, dim=1, descending=True, stable=True)
    return values[:, :k].cpu().numpy(), ranked[:, :k].cpu().numpy()


def loop_vote(sims: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    counts = Counter(labels.tolist())
    best = max(counts.values())
    tied = [c for c, n in counts.items() if n == best]
    sums = {c: float(sims[labels == c].sum()) for c in tied}
    winner = max(sorted(tied), key=lambda c: sums[c])
    return winner, sums[winner] / counts[winner]


def loop_nms_paint(
    masks: list[np.ndarray], labels: list[int], scores: list[float], hw, iou: float, min_area: int
) -> np.ndarray:
    final = []
    for label in sorted(set(labels)):
        order = sorted((i for i in range(len(labels)) if labels[i] == label), key=lambda i: -scores[i])
        keep: list[int] = []
        for i in order:
            if masks[i].sum() < min_area:
                continue
            ok = True
            for j in keep:
                inter = np.logical_and(masks[i], masks[j]).sum()
                union = np.logical_or(masks[i], masks[j]).sum()
                if union and inter / union > iou:
                    ok = False
                    break
            if ok:
                keep.append(i)
        final += keep
    semantic = np.zeros(hw, np.int32)
    painted = np.zeros(hw, bool)
    for i in sorted(final, key=lambda i: -scores[i]):
        if labels[i] == BACKGROUND:
            continue
        fresh = masks[i] & ~painted
        semantic[fresh] = labels[i]
        painted |= fresh
    return semantic


def released_loop(
    samples: Sequence[Sample], proposer: Built, encoder: Built, bank: Any, bank_labels: np.ndarray, config: RunConfig
) -> tuple[list[np.ndarray], Timer, int]:
    """(a): semantic maps, seconds per stage, masks seen."""
    import cv2

    method = config.method
    timer = Timer()
    maps, seen = [], 0
    for sample in progress(samples, total=len(samples), desc="bench (a) loop"):
        t0 = time.perf_counter()
        image = read_image(sample.image_path)
        t1 = time.perf_counter()
        found = proposer.component.propose(image, image_id=sample.id)
        masks = [m for m in found.masks if m.sum() >= method.min_mask_area]
        t2 = time.perf_counter()
        features = encoder.component.encode(image)
        t3 = time.perf_counter()
        kept, vectors = [], []
        for mask in masks:
            vector = loop_pool(cv2, features.tokens, features.geometry, mask)
            if vector is not None:
                kept.append(mask)
                vectors.append(vector)
        t4 = time.perf_counter()
        labels, scores = [], []
        if vectors:
            sims, rows = loop_search(np.stack(vectors).astype(np.float32), bank, min(method.top_k, len(bank_labels)))
            for s, r in zip(sims, rows, strict=True):
                label, score = loop_vote(s, bank_labels[r])
                labels.append(label)
                scores.append(score)
        t5 = time.perf_counter()
        maps.append(loop_nms_paint(kept, labels, scores, image.shape[:2], method.nms_iou, method.min_mask_area))
        t6 = time.perf_counter()
        seen += len(masks)
        for stage, seconds in zip(LOOP_STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            timer.add(stage, seconds)
    return maps, timer, seen

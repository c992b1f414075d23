"""``CosegLabeler``: co-segmentation of the bank split from image-level labels (numpy).

``fit(samples)`` proposes and encodes every image once, pools one vector per proposal, and
assigns every proposal of every image to background or one of the image's labels:

1. vectors are centred on the split's mean and L2-normalised;
2. seed: in an image with labels, the regions least similar to the mean of the image's
   border-touching regions (quantile ≥ ``seed_quantile``) are foreground: the label itself
   when the image has one, "some label" when it has several; the rest is background; every
   region of an image without labels is background, for good;
3. repeat ``iterations`` times, for every labelled image and every candidate
   ``k ∈ {background} ∪ labels``:
   ``score_k(r) = w·cos(r, P_k^others) + (1 − w)·cos(r, P_k^own) + bias·[k = background]``
   where ``P_k^others`` is the area-weighted mean of the regions assigned ``k`` in all OTHER
   images and ``P_k^own`` the same within the image (when it has none: the class falls back
   on the other images, background on the border mean); each region takes its best ``k``;
4. posteriors ``softmax(score / temperature)`` of the last round are painted: a pixel takes
   the candidate with the largest mean posterior over the proposals covering it (score-weighted);
   pixels no proposal covers are background.

``label`` re-proposes the image (proposers are deterministic), checks the proposals are those
seen by ``fit`` and paints the stored posteriors. An image ``fit`` did not see is scored with
the fitted prototypes and its own, by the same rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moduseg_core import ModusegError
from moduseg_core.contract.types import BACKGROUND, Proposals, Sample
from moduseg_core.files.io import read_image
from moduseg_core.files.progress import progress
from moduseg_core.method.pooling import patch_weights, pool

from .._shared import check_image
from ._common import build_part
from .coseg import CosegLabelerOptions

NAME = "coseg"
#: Images encoded together in ``fit``.
BATCH = 8


@dataclass
class Regions:
    """One image's proposals as the labeler sees them."""

    vectors: np.ndarray  # float32 n×D, L2 rows (usable proposals only)
    usable: np.ndarray  # bool N over all proposals
    areas: np.ndarray  # int64 N over all proposals
    border: np.ndarray  # bool n: the usable proposal touches the image border
    weights: np.ndarray  # float64 n: pixel areas of the usable proposals


def touches_border(masks: np.ndarray) -> np.ndarray:
    return (
        masks[:, 0, :].any(axis=1)
        | masks[:, -1, :].any(axis=1)
        | masks[:, :, 0].any(axis=1)
        | masks[:, :, -1].any(axis=1)
    )


def paint(proposals: Proposals, usable: np.ndarray, posteriors: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
    """Per pixel: the candidate with the largest score-weighted mean posterior of the proposals covering it."""
    masks = proposals.masks[usable]
    height, width = proposals.masks.shape[1:]
    weights = posteriors * proposals.scores[usable, None].astype(np.float64)
    total = np.zeros((len(candidates), height * width), np.float32)
    for start in range(0, len(masks), 32):
        chunk = masks[start : start + 32].reshape(-1, height * width).astype(np.float32)
        total += weights[start : start + 32].T.astype(np.float32) @ chunk
    winner = total.argmax(axis=0)
    winner[total.max(axis=0) <= 0] = 0  # covered by no proposal: background
    return np.asarray(candidates, np.int32)[winner].reshape(height, width)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else np.zeros_like(vector)


def score_image(
    x: np.ndarray,
    border: np.ndarray,
    weights: np.ndarray,
    labels: Sequence[int],
    assign: np.ndarray,
    others: dict[int, np.ndarray],
    options: CosegLabelerOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """One round for one image: (new assignment ``int64 n``, posteriors ``n×(1+len(labels))``).

    ``others[k]``: unit prototype of candidate ``k`` from the other images (zeros when none)."""
    candidates = [BACKGROUND, *labels]
    w = options.cross_weight
    scores = np.empty((len(x), len(candidates)))
    border_mean = _unit(x[border].mean(axis=0)) if border.any() else _unit(x.mean(axis=0))
    for j, k in enumerate(candidates):
        cross = x @ others.get(k, np.zeros(x.shape[1]))
        own = assign == k
        if own.any():
            within = x @ _unit((x[own] * weights[own, None]).sum(axis=0))
        else:
            within = cross if k != BACKGROUND else x @ border_mean
        scores[:, j] = w * cross + (1 - w) * within + (options.background_bias if k == BACKGROUND else 0.0)
    z = (scores - scores.max(axis=1, keepdims=True)) / options.temperature
    posteriors = np.exp(z)
    posteriors /= posteriors.sum(axis=1, keepdims=True)
    return np.asarray(candidates, np.int64)[scores.argmax(axis=1)], posteriors


def seed(x: np.ndarray, border: np.ndarray, labels: Sequence[int], quantile: float) -> np.ndarray:
    """Initial assignment: background, the single label, or -1 (some label) for the least border-like regions."""
    assign = np.zeros(len(x), np.int64)
    if not labels or not len(x):
        return assign
    reference = _unit(x[border].mean(axis=0)) if border.any() else _unit(x.mean(axis=0))
    foreground = -(x @ reference)
    chosen = foreground >= np.quantile(foreground, quantile)
    assign[chosen] = labels[0] if len(labels) == 1 else -1
    return assign


class CosegLabeler:
    """Vision-only pseudo masks; ``fit`` must see the bank split before ``label``."""

    oracle = False

    def __init__(self, options: CosegLabelerOptions):
        self.options = options
        self.proposer = build_part(NAME, "proposer", "proposer", options.proposer, options.proposer_options)
        self.encoder = build_part(NAME, "encoder", "encoder", options.encoder, options.encoder_options)
        self.mean: np.ndarray | None = None
        self.prototypes: dict[int, np.ndarray] = {}
        self.fitted: dict[str, tuple[Regions, tuple[int, ...], np.ndarray]] = {}  # id -> regions, labels, posteriors

    def __repr__(self) -> str:
        return (
            f"CosegLabeler(proposer={self.options.proposer!r}, encoder={self.options.encoder!r}, "
            f"fitted={len(self.fitted)})"
        )

    # -- regions --------------------------------------------------------------------------------

    def _propose(self, image: np.ndarray, sample: Sample) -> Proposals:
        proposals = self.proposer.propose(image, image_id=sample.id)
        if proposals.masks.shape[1:] != image.shape[:2]:
            raise ModusegError(
                f"labeler 'coseg' proposer {self.options.proposer!r} gave {proposals.masks.shape[1:]} masks for image "
                f"{sample.id!r} of size {image.shape[:2]}"
            )
        return proposals

    def _regions(self, proposals: Proposals, features) -> Regions:
        vectors = pool(features, patch_weights(proposals.masks, features.geometry))
        usable = np.abs(vectors).sum(axis=1) > 0
        areas = proposals.masks.reshape(len(proposals), -1).sum(axis=1)
        return Regions(
            vectors=vectors[usable],
            usable=usable,
            areas=areas,
            border=touches_border(proposals.masks[usable]) if usable.any() else np.zeros(0, bool),
            weights=areas[usable].astype(np.float64),
        )

    def _centre(self, vectors: np.ndarray) -> np.ndarray:
        centred = vectors - self.mean
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        return centred / np.maximum(norms, 1e-12)

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, samples: Sequence[Sample]) -> None:
        """Propose, encode and pool every sample once, then iterate the assignment over all of them."""
        samples = list(samples)
        if not samples:
            raise ModusegError("labeler 'coseg' was fitted on no images; it needs the bank split's samples")
        regions: list[Regions] = []
        pending: list[tuple[np.ndarray, Proposals]] = []

        def flush() -> None:
            features = self.encoder.encode_batch([image for image, _ in pending])
            regions.extend(
                self._regions(proposals, feats) for (_, proposals), feats in zip(pending, features, strict=True)
            )
            pending.clear()

        for sample in progress(samples, total=len(samples), desc="coseg fit"):
            image = check_image(read_image(sample.image_path), f"labeler {NAME!r}", cast=True)
            pending.append((image, self._propose(image, sample)))
            if len(pending) == BATCH:
                flush()
        if pending:
            flush()
        stacked = [r.vectors for r in regions if len(r.vectors)]
        if not stacked:
            raise ModusegError(
                f"labeler 'coseg' found no usable region in {len(samples)} images; check the proposer "
                f"{self.options.proposer!r} (does it return masks?) and the encoder"
            )
        self.mean = np.concatenate(stacked).astype(np.float64).mean(axis=0)
        xs = [self._centre(r.vectors.astype(np.float64)) for r in regions]
        labels = [tuple(sorted({int(c) for c in s.labels})) for s in samples]
        assign = [
            seed(x, r.border, ls, self.options.seed_quantile) for x, r, ls in zip(xs, regions, labels, strict=True)
        ]
        posteriors: list[np.ndarray] = [np.ones((len(x), 1)) for x in xs]
        for _ in range(self.options.iterations):
            sums = self._class_sums(xs, regions, assign)
            new_assign = []
            for i, (x, r, ls) in enumerate(zip(xs, regions, labels, strict=True)):
                if not ls or not len(x):
                    new_assign.append(assign[i])
                    continue
                others = {}
                for k in (BACKGROUND, *ls):
                    own = assign[i] == k
                    total = sums.get(k, np.zeros(x.shape[1])) - (x[own] * r.weights[own, None]).sum(axis=0)
                    others[k] = _unit(total)
                a, p = score_image(x, r.border, r.weights, ls, assign[i], others, self.options)
                new_assign.append(a)
                posteriors[i] = p
            assign = new_assign
        sums = self._class_sums(xs, regions, assign)
        self.prototypes = {k: _unit(v) for k, v in sums.items()}
        self.fitted = {s.id: (r, ls, p) for s, r, ls, p in zip(samples, regions, labels, posteriors, strict=True)}

    @staticmethod
    def _class_sums(xs, regions, assign) -> dict[int, np.ndarray]:
        sums: dict[int, np.ndarray] = {}
        for x, r, a in zip(xs, regions, assign, strict=True):
            for k in np.unique(a):
                if k < 0:
                    continue
                own = a == k
                sums[int(k)] = sums.get(int(k), 0) + (x[own] * r.weights[own, None]).sum(axis=0)
        return sums

    # -- label ----------------------------------------------------------------------------------

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        if self.mean is None:
            raise ModusegError(
                "labeler 'coseg' has not been fitted: call fit(samples) with the bank split first "
                "(moduseg build-bank, run and evaluate-labels do)"
            )
        image = check_image(image, f"labeler {NAME!r}", cast=True)
        labels = tuple(sorted({int(c) for c in sample.labels}))
        height, width = image.shape[:2]
        if not labels:
            return np.zeros((height, width), np.int32)
        proposals = self._propose(image, sample)
        seen = self.fitted.get(sample.id)
        if (
            seen is not None
            and seen[1] == labels
            and np.array_equal(seen[0].areas, proposals.masks.reshape(len(proposals), -1).sum(axis=1))
        ):
            regions, posteriors = seen[0], seen[2]
        else:  # an image fit did not see (or whose proposals changed): score it against the fitted prototypes
            regions = self._regions(proposals, self.encoder.encode(image))
            x = self._centre(regions.vectors.astype(np.float64))
            assign = seed(x, regions.border, labels, self.options.seed_quantile)
            posteriors = np.ones((len(x), 1))
            for _ in range(self.options.iterations):
                assign, posteriors = score_image(
                    x, regions.border, regions.weights, labels, assign, self.prototypes, self.options
                )
        if not regions.usable.any():
            return np.zeros((height, width), np.int32)
        return paint(proposals, regions.usable, posteriors, (BACKGROUND, *labels))

"""Why each mask got its label: its k bank neighbours, the vote tally, the margin, whether NMS kept it.

``Predictor(explain=True)`` (``inference.py``) attaches an ``ImageEvidence`` to every ``Prediction``; a
predictor that is not asked gathers nothing (``decide`` only tests the flag). ``ExplainLog`` writes the
evidence of a run or a ``predict`` as ``explain.jsonl`` (one line per image)::

    {"image": "000000001234", "size": [427, 640], "bank_provenance": true,
     "masks": [{"mask": 3, "label": "person", "label_id": 15, "score": 0.71, "kept": true, "paint": 0,
                "box": [x, y, w, h], "area": 5120, "rle": "...",
                "neighbours": [{"row": 12, "image": "000000000790", "class": "person", "similarity": 0.74}, ...],
                "votes": [{"class": "person", "count": 18, "similarity": 12.9}, ...],
                "margin": {"votes": 11, "similarity": 8.1},
                "truth": {"class": "diningtable", "row": 40, "image": "...", "rank": 37, "similarity": 0.52}}]}

``truth`` is there for an image with ground truth when the mask's label is not the ground-truth class most
of its pixels have: the nearest bank region of that class and its rank among all bank rows. ``paint``: the
order in which the kept masks paint the class map (``method.nms.rasterize``). Masks and ``rle`` are at the
image's working size (``size``). For a bank without provenance, neighbours have ``"image": null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.types import IGNORE_INDEX, SearchResult

FILE = "explain.jsonl"


@dataclass
class MaskEvidence:
    """One pooled mask's decision."""

    mask: int  # its row among the image's pooled masks
    label: int
    score: float
    rows: np.ndarray  # int64 k: the neighbours' bank rows, nearest first
    classes: np.ndarray  # int32 k
    similarities: np.ndarray  # float32 k
    votes: list[tuple[int, int, float]]  # (class, neighbours, similarity sum), the winner first
    kept: bool  # NMS kept it
    paint: int | None  # its place in the painting order (kept masks)
    vector: np.ndarray = field(repr=False)  # its pooled vector (not written)
    truth: dict[str, Any] | None = None

    @property
    def margin(self) -> tuple[int, float]:
        """Neighbours and similarity sum of the winner minus those of the runner-up class (all of them if none)."""
        first = self.votes[0]
        second = self.votes[1] if len(self.votes) > 1 else (first[0], 0, 0.0)
        return first[1] - second[1], first[2] - second[2]


@dataclass
class ImageEvidence:
    """The evidence of one image: every pooled mask (``masks`` bool N×h×w at the working size)."""

    masks: np.ndarray = field(repr=False)
    items: list[MaskEvidence]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])


def neighbour_rows(bank: Any, vectors: np.ndarray, found: SearchResult) -> np.ndarray:
    """The neighbours' bank rows: the index's own when it says them, else an exact search over the bank's
    vectors (similarity descending, the lower row first on ties, as the built-in indexes)."""
    if found.rows is not None:
        return np.asarray(found.rows, np.int64)
    k = found.labels.shape[1]
    scores = vectors @ bank.vectors.T
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=-1)
    return order[:, :k].astype(np.int64)


def tally(classes: np.ndarray, similarities: np.ndarray) -> list[tuple[int, int, float]]:
    """(class, count, similarity sum) per voting class, ordered as the vote ranks them: most neighbours, then
    the larger similarity sum, then the smaller class id (``method.vote.vote``)."""
    out = []
    for c in np.unique(classes):
        chosen = classes == c
        out.append((int(c), int(chosen.sum()), float(similarities[chosen].astype(np.float64).sum())))
    return sorted(out, key=lambda v: (-v[1], -v[2], v[0]))


def gather(
    bank: Any,
    masks: np.ndarray,
    vectors: np.ndarray,
    found: SearchResult,
    labels: np.ndarray,
    scores: np.ndarray,
    keep: np.ndarray,
) -> ImageEvidence:
    """The evidence of one image's decision (``Predictor.decide``'s search, vote and NMS)."""
    rows = neighbour_rows(bank, vectors, found)
    kept_scores = scores[keep]
    paint = {int(keep[i]): place for place, i in enumerate(np.argsort(-kept_scores, kind="stable"))}
    items = []
    for m in range(len(vectors)):
        items.append(
            MaskEvidence(
                mask=m,
                label=int(labels[m]),
                score=float(scores[m]),
                rows=rows[m],
                classes=found.labels[m],
                similarities=found.similarities[m],
                votes=tally(found.labels[m], found.similarities[m]),
                kept=m in paint,
                paint=paint.get(m),
                vector=vectors[m],
            )
        )
    return ImageEvidence(masks, items)


def add_truth(evidence: ImageEvidence, gt: np.ndarray, bank: Any) -> None:
    """For each mask whose label is not the ground-truth class of most of its pixels: the nearest bank region
    of that class and its rank among all bank rows (1 = nearest)."""
    from moduseg_core.method.scale import resize_nearest

    if gt.shape != evidence.size:
        gt = resize_nearest(gt, evidence.size)
    bank_vectors = bank.vectors
    for item in evidence.items:
        values = gt[evidence.masks[item.mask]]
        values = values[values != IGNORE_INDEX]
        if not len(values):
            continue
        truth = int(np.bincount(values.astype(np.int64)).argmax())
        if truth == item.label:
            continue
        members = np.flatnonzero(bank.labels == truth)
        if not len(members):
            item.truth = {"class": truth, "row": None, "rank": None, "similarity": None}
            continue
        sims = bank_vectors @ item.vector
        best = int(members[np.argmax(sims[members])])
        rank = int((sims > sims[best]).sum() + (sims[:best] == sims[best]).sum()) + 1
        item.truth = {"class": truth, "row": best, "rank": rank, "similarity": float(sims[best])}


def to_json(image_id: str | None, evidence: ImageEvidence, bank: Any, names: list[str]) -> dict[str, Any]:
    """One line of ``explain.jsonl``."""
    from moduseg_core.pipeline.provenance import region_box, rle_string

    provenance = bank.traced()

    def name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    def image_of(row: int | None) -> str | None:
        return provenance.row(row)["image"] if provenance is not None and row is not None else None

    masks = []
    for item in evidence.items:
        region = evidence.masks[item.mask]
        votes, similarity = item.margin
        entry: dict[str, Any] = {
            "mask": item.mask,
            "label": name(item.label),
            "label_id": item.label,
            "score": round(item.score, 6),
            "kept": item.kept,
            "paint": item.paint,
            "box": region_box(region),
            "area": int(region.sum()),
            "rle": rle_string(region),
            "neighbours": [
                {"row": int(r), "image": image_of(int(r)), "class": name(int(c)), "similarity": round(float(s), 6)}
                for r, c, s in zip(item.rows, item.classes, item.similarities, strict=True)
            ],
            "votes": [{"class": name(c), "count": n, "similarity": round(s, 6)} for c, n, s in item.votes],
            "margin": {"votes": votes, "similarity": round(similarity, 6)},
        }
        if item.truth is not None:
            truth = item.truth
            entry["truth"] = {
                "class": name(truth["class"]),
                "class_id": truth["class"],
                "row": truth["row"],
                "image": image_of(truth["row"]),
                "rank": truth["rank"],
                "similarity": None if truth["similarity"] is None else round(truth["similarity"], 6),
            }
        masks.append(entry)
    return {"image": image_id, "size": list(evidence.size), "bank_provenance": provenance is not None, "masks": masks}


class ExplainLog:
    """The ``explain.jsonl`` of a run or a ``predict``: lines gathered in input order, written once, atomically."""

    def __init__(self, bank: Any, names: list[str]):
        self.bank = bank
        self.names = list(names)
        self.lines: list[str] = []

    def add(self, image_id: str, prediction: Any, gt: np.ndarray | None = None) -> None:
        evidence = prediction.evidence
        if evidence is None:
            return
        if gt is not None:
            add_truth(evidence, gt, self.bank)
        self.lines.append(json.dumps(to_json(image_id, evidence, self.bank, self.names), separators=(",", ":")))

    def write(self, folder: Path) -> Path:
        from moduseg_core.files.writing import write_text

        write_text(Path(folder) / FILE, "".join(line + "\n" for line in self.lines))
        return Path(folder) / FILE


def read_explain(path: Path | str) -> list[dict[str, Any]]:
    """The lines of an ``explain.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

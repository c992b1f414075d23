"""The evidence of a run's masks in report.html (``moduseg run --explain``).

Clicking a predicted region in the gallery (``#explain=ID@X,Y`` in the URL does the same at the fractions
X, Y of the picture) opens its evidence: the label, its score, the vote tally and margin, the k nearest
bank regions as thumbnails (the bank image cropped around the region, outlined in its class's colour, with
the similarity), and for a wrong label the nearest bank region of the ground-truth class with its rank.
Hovering a region names its label. The data is the run's ``explain.jsonl``; the pictures come from the
bank images named by the bank's ``provenance.jsonl`` (``REGION_THUMB`` px JPEGs, each bank region once, at
most ``EVIDENCE_THUMBS``): a bank without provenance, or bank images that cannot be read, give text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.files.writing import voc_palette
from moduseg_core.pipeline.evidence import FILE, read_explain
from moduseg_core.pipeline.provenance import NO_PROVENANCE, decode_rle
from moduseg_core.report_html.images import resize_labels, thumb_size
from moduseg_core.report_html.page import rgb
from moduseg_core.report_html.regions import RegionThumbs

#: At most this many distinct bank-region thumbnails in one page (the page's size cap); the rest are text.
EVIDENCE_THUMBS = 1500
#: The click map of an image is at most this many pixels on its longer side.
MAP_SIZE = 128
#: At most this many neighbours in one page (about 12 bytes each): wrong labels first, then foreground masks.
EVIDENCE_NEIGHBOURS = 100_000
#: At most this many images carry evidence (as the gallery: ``GALLERY_LIMIT``).
EVIDENCE_IMAGES = 200


def owner_map(line: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Which kept mask answers a click on each pixel (``size``: width, height): the foreground mask that
    painted it, else the best-scored background mask covering it; 0 = none, i = the (i-1)-th mask returned."""
    hw = (int(line["size"][0]), int(line["size"][1]))
    kept = sorted((m for m in line["masks"] if m["kept"]), key=lambda m: m["paint"])
    owner = np.zeros(hw, np.int32)
    order = [m for m in kept if m["label_id"] != 0] + [m for m in kept if m["label_id"] == 0]
    for i, mask in enumerate(order):
        region = decode_rle(mask["rle"], hw) & (owner == 0)
        owner[region] = i + 1
    return resize_labels(owner, size), order


def _runs(values: np.ndarray) -> list[int]:
    """Row-major run lengths: value, count, value, count..."""
    flat = values.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], edges])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return [int(v) for pair in zip(flat[starts], counts, strict=True) for v in pair]


def evidence_data(
    lines: Sequence[dict[str, Any]],
    bank: Any,
    names: Sequence[str],
    palette: np.ndarray,
    limit: int = EVIDENCE_THUMBS,
    budget: int = EVIDENCE_NEIGHBOURS,
) -> tuple[dict[str, Any], list[str]]:
    """The page's evidence (JSON-ready) and its notes (said once each). Per image its click map and its kept
    masks ``[label, score, margin votes, margin similarity, votes, neighbours, truth]``, votes ``[class, count,
    similarity sum]``, neighbours ``[row, similarity]`` (``rows``: row → [class, image id]), truth ``[class,
    row, rank, similarity]``. At most ``budget`` neighbours in all: wrong labels first, then foreground masks,
    then background masks by score; the others' neighbours are left to ``explain.jsonl``."""
    provenance = bank.traced() if bank is not None else None
    index = {name: i for i, name in enumerate(names)}
    images: dict[str, Any] = {}
    rows: dict[str, list[Any]] = {}
    pending: list[tuple[tuple[int, float], list[Any], dict[str, Any]]] = []
    for line in lines[:EVIDENCE_IMAGES]:
        hw = (int(line["size"][0]), int(line["size"][1]))
        width, height = thumb_size(hw[0], hw[1], MAP_SIZE, MAP_SIZE)
        owner, order = owner_map(line, (width, height))
        masks = []
        for mask in order:
            truth = mask.get("truth")
            entry: list[Any] = [
                mask["label_id"],
                round(mask["score"], 4),
                mask["margin"]["votes"],
                round(mask["margin"]["similarity"], 3),
                [[index.get(v["class"], -1), v["count"], round(v["similarity"], 2)] for v in mask["votes"]],
                None,
                None
                if truth is None
                else [
                    truth["class_id"],
                    truth["row"],
                    truth["rank"],
                    None if truth["similarity"] is None else round(truth["similarity"], 3),
                ],
            ]
            if truth is not None and truth["row"] is not None:
                rows[str(truth["row"])] = [truth["class_id"], truth["image"]]
            rank = 0 if truth is not None else 1 if mask["label_id"] != 0 else 2
            pending.append(((rank, -mask["score"]), entry, mask))
            masks.append(entry)
        images[str(line["image"])] = {"w": width, "h": height, "map": _runs(owner), "m": masks}
    used = left_out = 0
    for _, entry, mask in sorted(pending, key=lambda item: item[0]):
        if used + len(mask["neighbours"]) > budget:
            left_out += 1
            continue
        used += len(mask["neighbours"])
        entry[5] = [[n["row"], round(n["similarity"], 3)] for n in mask["neighbours"]]
        for n in mask["neighbours"]:
            rows[str(n["row"])] = [index.get(n["class"], -1), n["image"]]
    notes = []
    if left_out:
        notes.append(
            f"The neighbours of {left_out} masks (background first) are left out of the page to keep it small "
            f"(at most {budget} neighbours in all); explain.jsonl has them."
        )
    pictures: dict[str, str] = {}
    if provenance is None:
        notes.append(f"This bank has {NO_PROVENANCE}: its regions are named by class and similarity only.")
    else:
        from collections import Counter

        uses = Counter(row for image in images.values() for m in image["m"] for row, _ in (m[5] or []))
        chosen = sorted(rows, key=lambda r: (-uses[int(r)], int(r)))[:limit]
        thumbs = RegionThumbs(palette)
        for row in chosen:
            uri = thumbs.region(provenance.row(int(row)))
            if uri is not None:
                pictures[row] = uri
        if len(rows) > limit:
            notes.append(f"{limit} of {len(rows)} bank regions have a picture (the page's cap); the rest are text.")
        if thumbs.unreadable:
            notes.append(thumbs.unreadable_note())
    colours = [rgb(palette[i % 256]) for i in range(len(names))]
    return {"images": images, "rows": rows, "thumbs": pictures, "colours": colours, "names": list(names)}, notes


def evidence_html(data: dict[str, Any], notes: Sequence[str], atlas: str | None) -> str:
    """The section: how to use it, its notes, the evidence panel, its data, style and script."""
    from moduseg_core.report_html.page import static

    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    link = (
        (
            f" The bank itself — its regions per class, its outliers, a map of its vectors and how well they "
            f'separate the classes — is in <a href="{escape(atlas)}" id="atlas-link">the bank atlas</a>.'
        )
        if atlas
        else ""
    )
    parts = [
        '<h2 id="evidence-title">Why each label</h2>',
        f'<p class="note">Click a region of a prediction in the gallery to see why it got its label: its nearest bank '
        f"regions (the bank image, the region outlined in its class's colour, the similarity), the vote and the "
        f"margin; "
        f"for a wrong label, the nearest bank region of the ground-truth class and its rank.{link}</p>",
        *(f'<p class="note ev-note">{escape(n)}</p>' for n in notes),
        '<aside id="evidence" hidden><button type="button" id="evidence-close" title="close">×</button>'
        '<div id="evidence-body"></div></aside>',
        f'<script type="application/json" id="evidence-data">{payload}</script>',
        f"<style>{static('evidence.css')}</style><script>{static('evidence.js')}</script>",
    ]
    return "".join(parts)


def explained_page(out_dir: Path, bank: Any, names: Sequence[str]) -> dict[str, Any]:
    """For ``runner.write_html``: writes the bank's atlas (``out_dir/atlas.html``) and returns the evidence
    section of report.html (``extra``) from ``out_dir/explain.jsonl``."""
    from moduseg_core.report_html.atlas import write_atlas

    out_dir = Path(out_dir)
    atlas = None
    try:
        write_atlas(out_dir / "atlas.html", bank)
        atlas = "atlas.html"
    except Exception as exc:  # noqa: BLE001 (the report still shows the evidence)
        import sys

        print(f"warning: atlas.html not written: {type(exc).__name__}: {exc}", file=sys.stderr)
    path = out_dir / FILE
    if not path.is_file():
        return {}
    data, notes = evidence_data(read_explain(path), bank, names, voc_palette())
    return {"extra": evidence_html(data, notes, atlas)}

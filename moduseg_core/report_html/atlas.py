"""The bank atlas (``moduseg bank show BANK --out DIR``, and ``atlas.html`` of ``run --explain``): one
self-contained page about a bank before any proposal is involved.

- per class the regions seen, those under the area minimum, those the outlier filter dropped, those kept,
  and the leave-one-out k-NN accuracy;
- per class a grid of kept regions (the most typical first: nearest to the class mean) and of the dropped
  outliers (the farthest first), as thumbnails of the bank images with the region outlined;
- a 2-D map (PCA) of every bank vector coloured by class (dropped outliers as rings);
- the class confusion of leave-one-out k-NN over the bank (k = the method's ``top_k``): how well this
  encoder and labeler separate the classes.

A bank without provenance (format 1) gets the counts of its manifest, the map and the confusion; its grids
say so. Capped: ``ATLAS_KEPT`` / ``ATLAS_DROPPED`` thumbnails a class, ``ATLAS_POINTS`` points on the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.files.writing import voc_palette, write_text
from moduseg_core.pipeline.bank_stats import loo_knn, pca_2d
from moduseg_core.pipeline.provenance import NO_PROVENANCE
from moduseg_core.report_html.charts import heatmap
from moduseg_core.report_html.page import card, document, oracle_banner, pct, rgb
from moduseg_core.report_html.regions import RegionThumbs

ATLAS_KEPT = 12
ATLAS_DROPPED = 6
ATLAS_POINTS = 4000

CSS = """
.grids .cls { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; margin: 10px 0; }
.grids .strip { display: flex; flex-wrap: wrap; gap: 5px; margin: 4px 0 8px; }
.grids figure { margin: 0; width: 88px; font-size: 10.5px; line-height: 1.2; color: var(--muted); }
.grids figure img { display: block; max-width: 84px; max-height: 84px; border: 3px solid; border-radius: 3px; }
.grids figure.dropped img { border-style: dashed; }
.sw { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
svg.map circle { stroke-width: 1.2; }
"""


def _counts(bank: Any, provenance: Any) -> dict[str, np.ndarray]:
    n = len(bank.class_names)
    if provenance is not None:
        return provenance.counts(n)
    counts = bank.manifest.get("counts") or {}
    before, kept = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, name in enumerate(bank.class_names):
        before[i] = (counts.get("vectors_before_filter") or {}).get(name, 0)
        kept[i] = (counts.get("vectors") or {}).get(name, 0)
    return {"seen": before, "small": np.full(n, -1), "dropped": before - kept, "kept": kept}


def _scatter(
    points: np.ndarray,
    classes: np.ndarray,
    hollow: np.ndarray,
    palette: np.ndarray,
    names: Sequence[str],
    size: int = 560,
) -> str:
    """An SVG scatter plot, ``ATLAS_POINTS`` at most (evenly spaced), kept points over the dropped rings."""
    if len(points) > ATLAS_POINTS:
        pick = np.linspace(0, len(points) - 1, ATLAS_POINTS).astype(np.int64)
        points, classes, hollow = points[pick], classes[pick], hollow[pick]
    lo, hi = points.min(axis=0) if len(points) else np.zeros(2), points.max(axis=0) if len(points) else np.ones(2)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = 10 + (points - lo) / span * (size - 20)
    dots = []
    for (x, y), c, ring in sorted(
        zip(xy.tolist(), classes.tolist(), hollow.tolist(), strict=True), key=lambda t: not t[2]
    ):
        colour = rgb(palette[int(c) % 256])
        fill = "none" if ring else colour
        name = escape(names[int(c)])
        dots.append(
            f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="3" fill="{fill}" stroke="{colour}" '
            f'data-class="{name}"><title>{name}</title></circle>'
        )
    return (
        f'<svg class="chart map" id="map" width="{size}" height="{size}" viewBox="0 0 {size} {size}">'
        f'<rect width="{size}" height="{size}" fill="#fff" stroke="#d8dde3"/>{"".join(dots)}</svg>'
    )


def _figure(
    thumbs: RegionThumbs, region: dict[str, Any], names: Sequence[str], palette: np.ndarray, dropped: bool
) -> str:
    uri = thumbs.region(region)
    colour = rgb(palette[int(region["class"]) % 256])
    what = f"d {region['distance']:.3f}" + ("" if not dropped else " · dropped")
    pic = (
        f'<img alt="" src="{uri}" style="border-color:{colour}">'
        if uri
        else f'<div class="none">{escape(region["image"])}</div>'
    )
    return (
        f'<figure class="{"dropped" if dropped else "kept"}" data-class="{escape(names[int(region["class"])])}">'
        f"{pic}<figcaption>{escape(str(region['image']))}<br>{what}</figcaption></figure>"
    )


def _grids(
    provenance: Any, names: Sequence[str], palette: np.ndarray, counts: dict[str, np.ndarray]
) -> tuple[str, str]:
    if provenance is None:
        return (
            f'<p class="note" id="no-provenance">This bank has {NO_PROVENANCE} (format 1): no region pictures.</p>',
            "",
        )
    thumbs = RegionThumbs(palette)
    by_class: dict[int, list[dict[str, Any]]] = {}
    for region in provenance.regions():
        by_class.setdefault(int(region["class"]), []).append(region)
    parts = ['<div class="grids" id="grids">']
    for c in sorted(by_class):
        regions = by_class[c]
        kept = sorted((r for r in regions if r["row"] is not None), key=lambda r: r["distance"])[:ATLAS_KEPT]
        dropped = sorted((r for r in regions if r["row"] is None), key=lambda r: -r["distance"])[:ATLAS_DROPPED]
        parts.append(
            f'<div class="cls" data-class="{escape(names[c])}"><b><span class="sw" style="background:'
            f'{rgb(palette[c % 256])}"></span>{escape(names[c])}</b> — kept {int(counts["kept"][c])}, dropped '
            f"{int(counts['dropped'][c])}; d = distance to the class mean"
        )
        parts.append(
            '<div class="strip kept-strip">'
            + "".join(_figure(thumbs, r, names, palette, False) for r in kept)
            + "</div>"
        )
        if dropped:
            parts.append(
                '<div class="note">dropped by the outlier filter (farthest first):</div>'
                '<div class="strip dropped-strip">'
                + "".join(_figure(thumbs, r, names, palette, True) for r in dropped)
                + "</div>"
            )
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts), thumbs.unreadable_note()


def atlas_html(bank: Any, *, title: str = "ModuSeg bank atlas") -> str:
    """The atlas page of ``bank`` (a loaded or just built ``Bank``)."""
    palette = voc_palette()
    names = list(bank.class_names)
    provenance = bank.traced()
    counts = _counts(bank, provenance)
    k = int((bank.manifest.get("method") or {}).get("top_k", 25))
    confusion = loo_knn(bank.vectors, bank.labels, k, len(names))
    total = confusion.sum()
    accuracy = float(np.trace(confusion) / total) if total else None
    components = bank.manifest.get("components") or {}
    oracle = bool((components.get("labeler") or {}).get("oracle"))
    body = [f"<h1>{escape(title)}</h1>", oracle_banner(oracle)]
    source = bank.directory or "a bank built in this run"
    body.append(
        f'<p class="note">Bank <code>{escape(str(source))}</code>; encoder <code>'
        f"{escape(str((components.get('encoder') or {}).get('name')))}</code>, labeler <code>"
        f"{escape(str((components.get('labeler') or {}).get('name')))}</code>.</p>"
    )
    body.append(
        '<div class="cards">'
        + card(str(len(bank)), "bank vectors")
        + card(str(len(set(bank.labels.tolist()))), "classes")
        + card(pct(accuracy), f"leave-one-out {k}-NN accuracy", "each vector voted on by its nearest others", "loo")
        + "</div>"
    )
    rows = []
    for c, name in enumerate(names):
        if not counts["seen"][c] and not counts["kept"][c]:
            continue
        right, n = int(confusion[c, c]), int(confusion[c].sum())
        small = "–" if counts["small"][c] < 0 else str(int(counts["small"][c]))
        rows.append(
            f'<tr data-class="{escape(name)}"><td><span class="sw" style="background:{rgb(palette[c % 256])}"></span>'
            f'{escape(name)}</td><td class="n">{int(counts["seen"][c])}</td><td class="n">{small}</td>'
            f'<td class="n">{int(counts["dropped"][c])}</td><td class="n">{int(counts["kept"][c])}</td>'
            f'<td class="n">{pct(right / n if n else None, 1)}</td></tr>'
        )
    body.append(
        '<h2 id="counts">Regions per class</h2><table id="class-counts"><thead><tr><th>class</th>'
        '<th class="n">seen</th>'
        '<th class="n">below min area</th><th class="n">dropped by the filter</th><th class="n">kept</th>'
        f'<th class="n">LOO {k}-NN accuracy</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    points, share = pca_2d(bank.vectors)
    hollow = np.zeros(len(points), bool)
    classes = bank.labels
    body.append(
        f'<h2 id="map-title">Map of the bank (PCA: {pct(share[0], 1)} % and {pct(share[1], 1)} % of the variance)</h2>'
        '<div class="row2"><div>' + _scatter(points, classes, hollow, palette, names) + "</div>"
        f"<div><b>Leave-one-out {k}-NN confusion</b> (rows: the vector's class; columns: the vote of its "
        f"nearest other vectors)" + heatmap(confusion, names) + "</div></div>"
    )
    grids, unreadable = _grids(provenance, names, palette, counts)
    body.append('<h2 id="regions">Regions: kept (most typical first) and dropped outliers</h2>')
    if unreadable:
        body.append(f'<p class="note" id="unreadable">{escape(unreadable)}</p>')
    body.append(grids)
    body.append("<footer>Written by moduseg bank show; self-contained (no network).</footer>")
    return document(title, "".join(body), CSS)


def write_atlas(path: Path | str, bank: Any) -> Path:
    """Write the atlas page of ``bank`` to ``path``, atomically."""
    write_text(path, atlas_html(bank))
    return Path(path)

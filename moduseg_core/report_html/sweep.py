"""A sweep's page (``moduseg ablate``): its results table, its plots and the same images side by side across
points (``sweep_html``, ``write_sweep_html``)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.files.writing import voc_palette, write_text
from moduseg_core.report_html import images as _images
from moduseg_core.report_html.charts import iou_bars
from moduseg_core.report_html.page import (
    AVERAGING,
    card,
    components_table,
    document,
    oracle_banner,
    pct,
    photo_css,
    timed,
    tolerance_text,
)
from moduseg_core.report_html.parts import (
    RUN_KINDS,
    SWEEP_GALLERY_LIMIT,
    SWEEP_POINT_LIMIT,
    _gallery,
    _ids_by_name,
    _skipped_text,
)


def _results_table(reports: Sequence[dict[str, Any]], axes: Sequence[str]) -> str:
    best = max((float(r["miou"]) for r in reports if r.get("miou") is not None), default=None)
    head = ["#", *axes, "mIoU", "pixel acc.", "boundary F", "Boundary IoU", "seconds"]
    numeric = [True] + [False] * len(axes) + [True] * 5
    ths = "".join(f'<th class="{"n" if n else ""}">{escape(h)}</th>' for h, n in zip(head, numeric, strict=True))
    rows = []
    for order, r in enumerate(reports):
        bound = r.get("boundary") or {}
        values = [(r.get("point"), str(r.get("point")))]
        for axis in axes:
            value = (r.get("axes") or {}).get(axis)
            values.append((None, _axis_text(value)))
        for v in (r.get("miou"), r.get("pixel_accuracy"), bound.get("f_score"), bound.get("iou")):
            values.append((v, pct(v)))
        wall = (r.get("seconds") or {}).get("wall")
        values.append((wall, "–" if wall is None else f"{wall:.1f}"))
        cells = []
        for k, ((v, text), n) in enumerate(zip(values, numeric, strict=True)):
            data = f' data-v="{v}"' if n and v is not None else (' data-v=""' if n else "")
            cell = f'<td class="{"n" if n else ""}"{data}>{escape(text)}</td>'
            cells.append(timed(cell) if k == len(values) - 1 else cell)
        cls = ' class="best"' if best is not None and r.get("miou") == best else ""
        rows.append(f'<tr data-order="{order}"{cls}>{"".join(cells)}</tr>')
    return (f'<table class="sortable" id="results"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="note">Click a column to sort; the best mIoU is highlighted.</p>')


def _axis_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "–" if value is None else str(value)


def _point_label(report: dict[str, Any], axes: Sequence[str]) -> str:
    varying = [a for a in axes]
    values = " / ".join(_axis_text((report.get("axes") or {}).get(a)) for a in varying)
    return f"#{report.get('point')}" + (f" {values}" if values else "")


def _pick_points(reports: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The points a sweep gallery compares: all when they fit; else the best and the worst by mIoU
    and the rest spread evenly between them."""
    if len(reports) <= limit:
        return list(reports)
    order = sorted(reports, key=lambda r: (r.get("miou") is None, -(r.get("miou") or 0.0)))
    picks = {round(k * (len(order) - 1) / (limit - 1)) for k in range(limit)}
    chosen = {id(order[i]) for i in picks}
    return [r for r in reports if id(r) in chosen]


def sweep_html(
    results: dict[str, Any],
    reports: Sequence[dict[str, Any]],
    samples: Sequence[Any],
    point_dirs: dict[int, Path],
    class_names: Sequence[str],
    plots: dict[str, bytes] | None = None,
    *,
    title: str | None = None,
    image_limit: int = SWEEP_GALLERY_LIMIT,
    point_limit: int = SWEEP_POINT_LIMIT,
    palette: np.ndarray | None = None,
) -> str:
    """A sweep's page: ``results`` is results.json's ``sweep`` summary (with ``axes``), ``reports`` the
    points' reports, ``point_dirs`` point index → folder with ``predictions/{id}.png`` (points without
    that folder have no gallery column), ``plots`` file name → PNG bytes."""
    from moduseg_core.report_html.images import data_uri

    palette = voc_palette() if palette is None else palette
    names = list(class_names)
    summary = results.get("sweep", results)
    axes_spec = results.get("axes") or {}
    axes = [k for k, v in (axes_spec.get("grid") or {}).items() if len(v) > 1]
    axes += [k for k, v in (axes_spec.get("zip") or {}).items() if len(v) > 1]
    if not axes:
        axes = sorted({k for r in reports for k in (r.get("axes") or {})})
    title = title or f"ModuSeg sweep {summary.get('name', '')}".strip()
    oracle = any(r.get("oracle") for r in reports)
    body = [f"<h1>{escape(title)}</h1>", oracle_banner(oracle)]
    skipped = sum(int(r.get("skipped") or 0) if isinstance(r.get("skipped"), int) else 0 for r in reports)
    body.append(_skipped_text(skipped))
    best = max((r for r in reports if r.get("miou") is not None), key=lambda r: r["miou"], default=None)
    cards = [card(str(len(reports)), "points"), timed(card(f"{summary.get('wall', 0):.1f}", "wall seconds"))]
    if best is not None:
        cards.insert(0, card(pct(best["miou"]), "best mIoU", escape(_point_label(best, axes)), "miou"))
        bound = best.get("boundary") or {}
        if bound:
            cards.insert(
                1,
                card(
                    pct(bound.get("f_score")),
                    "its boundary F",
                    f"tolerance {escape(tolerance_text(bound['tolerance']))}",
                    "bf",
                ),
            )
            cards.insert(
                2, card(pct(bound.get("iou")), "its Boundary IoU", f"dilation {bound['dilation_ratio']:g}", "biou")
            )
        ev = best.get("eval") or {}
        if ev.get("images") is not None:
            cards.append(
                card(
                    str(ev["images"]),
                    "images per point",
                    f"{escape(str(ev.get('name', '')))} / {escape(str(ev.get('split', '')))}",
                    "images",
                )
            )
    body.append('<div class="cards">' + "".join(cards) + "</div>")
    n = sum(v is not None for v in ((best or {}).get("per_class_iou") or {}).values())
    if best is not None:
        body.append(f'<p class="note" id="averaging">{escape(AVERAGING.format(n=n))}</p>')
    if summary.get("description"):
        body.append(f"<p>{escape(str(summary['description']))}</p>")
    body.append('<h2 id="results-title">Results</h2>' + _results_table(reports, axes))
    css = ""
    shown = [r for r in _pick_points(reports, point_limit)
             if r.get("point") in point_dirs and (Path(point_dirs[r["point"]]) / "predictions").is_dir()]
    if shown and samples:
        columns = {_point_label(r, axes): Path(point_dirs[r["point"]]) / "predictions" for r in shown}
        stats = _images.image_stats(samples, columns, len(names))
        spread: dict[str, float | None] = {}
        for image_id in stats.ids:
            found = [stats.iou[c].get(image_id) for c in columns]
            values = [v for v in found if v is not None]
            spread[image_id] = -(max(values) - min(values)) if len(values) > 1 else None
        # the images whose IoU differs most between points are the most telling
        chosen = sorted(stats.ids, key=lambda i: (spread[i] is None, spread[i] or 0.0, i))[:image_limit]
        chosen_set = set(chosen)
        items = _images.build_items(samples, columns, len(names), [i for i in stats.ids if i in chosen_set], stats,
                                    thumb_width=max(120, min(240, 1150 // (len(columns) + 2) - 8)))
        note = (f"{len(items)} of {len(stats.ids)} images: those whose image IoU differs most between the points shown"
                + (f"; {len(shown)} of {len(reports)} points (the best, the worst and the rest spread by mIoU)"
                   if len(shown) < len(reports) else "") + ".")
        body.append(
            f'<h2 id="gallery-title">Same images across points ({len(items)} images × {len(columns)} points)</h2>'
        )
        first = next(iter(columns))
        sorts = [("spread-desc", "IoU spread between points, largest first"),
                 ("iou-asc", f"image IoU at {first}, worst first"), ("iou-desc", f"image IoU at {first}, best first"),
                 ("id-asc", "image id")]
        body.append(_gallery(items, names, palette, list(columns), sorts=sorts, default_sort="spread-desc", note=note))
        css = photo_css(items)
    elif reports:
        body.append('<h2 id="gallery-title">Same images across points</h2><p class="note">No point of this sweep kept '
                    "prediction files (points whose scores came whole from the cache predict nothing), so there is no "
                    "gallery.</p>")
    if plots:
        body.append('<h2 id="plots">Plots</h2><div class="plots">')
        for name, payload in plots.items():
            body.append(f'<div><img alt="{escape(name)}" src="{data_uri(payload, "image/png")}"></div>')
        body.append("</div>")
    if best is not None and best.get("per_class_iou"):
        body.append(
            f'<h2>Per-class IoU of the best point ({escape(_point_label(best, axes))})</h2><div class="row2"><div>'
            + iou_bars(best["per_class_iou"], palette, _ids_by_name(names))
            + "</div></div>"
        )
    if best is not None and best.get("config"):
        body.append(
            '<h2 id="components">Components of the best point</h2>' + components_table(best["config"], RUN_KINDS)
        )
    body.append("<footer>Written by moduseg ablate; self-contained (no network). Numbers from results.json.</footer>")
    return document(title, "".join(body), css)


def write_sweep_html(
    out_dir: Path,
    reports: Sequence[dict[str, Any]],
    samples: Sequence[Any],
    class_names: Sequence[str],
    *,
    results: dict[str, Any] | None = None,
    name: str = "report.html",
    **options: Any,
) -> Path:
    """Write ``out_dir/report.html`` for a sweep folder (results.json, plots/*.png, points/SLUG/predictions)."""
    import json

    out_dir = Path(out_dir)
    if results is None:
        path = out_dir / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
    plots = {}
    for plot in ("miou.png", "per_class_iou.png", "heatmap.png"):
        path = out_dir / "plots" / plot
        if path.is_file():
            plots[plot] = path.read_bytes()
    point_dirs = {r["point"]: out_dir / "points" / str(r.get("slug")) for r in reports if "point" in r}
    html = sweep_html(results, reports, samples, point_dirs, class_names, plots, **options)
    write_text(out_dir / name, html)
    return out_dir / name

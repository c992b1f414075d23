"""``report.html``: a self-contained page (opens from disk; no server, no network) that shows a run's
or a sweep's results — the headline numbers, per-class IoU as a sorted bar chart, the confusion
matrix as a heat map, and a gallery image | ground truth | prediction with a class legend and the
masks' outlines, sortable by per-image IoU (worst first) and filterable by class. A sweep's page
has the results table (sortable), its plots and the same images side by side across points.

Pictures are small thumbnails embedded as ``data:`` URIs; the gallery is capped (``GALLERY_LIMIT``).
numpy and Pillow only (no model, no torch).

- ``run_html(report, samples, predictions_dir, class_names)`` → the page of one run (or of
  ``evaluate``'s scores: the same report fields);
- ``sweep_html(results, reports, samples, point_dirs, class_names, plots_dir)`` → a sweep's page;
- ``write_run_html`` / ``write_sweep_html`` write it atomically (so the output folder's marker
  records it).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.files.writing import voc_palette, write_text
from moduseg_core.report_html import images as _images
from moduseg_core.report_html.charts import heatmap, iou_bars
from moduseg_core.report_html.page import (
    AVERAGING,
    card,
    class_list,
    components_table,
    controls,
    document,
    gallery_classes,
    item_names,
    legend,
    oracle_banner,
    panel,
    pct,
    photo_css,
    timed,
    tolerance_text,
)

#: At most this many images in a gallery (the worst half by IoU and the rest spread over the others).
GALLERY_LIMIT = 200
#: A sweep's gallery: at most this many images and this many points side by side.
SWEEP_GALLERY_LIMIT = 24
SWEEP_POINT_LIMIT = 12
RUN_KINDS = ("dataset", "labeler", "proposer", "purifier", "encoder", "aggregator", "index")
PREDICTION = "prediction"


def _ids_by_name(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def _skipped_text(skipped: Any) -> str:
    if isinstance(skipped, dict):
        bank, evals = skipped.get("bank", 0) or 0, skipped.get("eval", 0) or 0
        if not (bank or evals):
            return ""
        log = skipped.get("log", "errors.jsonl")
        return (
            f'<div class="skipped" id="skipped"><b>Skipped images</b> (on_error: skip; reasons in '
            f"<code>{escape(str(log))}</code>): {bank} of the bank split, {evals} of the eval split — left out of the "
            "bank and the scores.</div>"
        )
    if isinstance(skipped, int) and skipped:
        return (
            f'<div class="skipped" id="skipped"><b>Skipped images:</b> {skipped} (reasons in '
            '<code>errors.jsonl</code>).</div>'
        )
    return ""


def headline(report: dict[str, Any], images: int | None = None) -> str:
    """Cards: mIoU (with its averaging), pixel accuracy, boundary F, Boundary IoU, images."""
    cards = []
    per_class = report.get("per_class_iou") or {}
    n = sum(v is not None for v in per_class.values())
    if "miou" in report:
        from moduseg_core.method.metrics import miou_note

        if report.get("miou_average") == "all":  # every scored class, an empty union as 0
            n = len(per_class) - len(report.get("not_scored") or [])
        cards.append(
            card(
                pct(report.get("miou")), "mIoU", f"mean of {n} classes (dataset-level IoU; {miou_note(report)})", "miou"
            )
        )
        cards.append(card(pct(report.get("pixel_accuracy")), "pixel accuracy"))
    bound = report.get("boundary") or {}
    if bound:
        cards.append(
            card(
                pct(bound.get("f_score")), "boundary F", f"tolerance {escape(tolerance_text(bound['tolerance']))}", "bf"
            )
        )
        cards.append(
            card(pct(bound.get("iou")), "Boundary IoU", f"dilation {bound['dilation_ratio']:g} of the diagonal", "biou")
        )
    ev = report.get("eval") or {}
    if images is None:
        skipped = report.get("skipped")
        images = (ev.get("images") or 0) - (skipped.get("eval", 0) if isinstance(skipped, dict) else 0)
    where = f"{escape(str(ev.get('name', '')))} / {escape(str(ev.get('split', '')))}" if ev else ""
    cards.append(card(str(images), "images scored", where, "images"))
    bank = report.get("bank") or {}
    if bank.get("size") is not None:
        cards.append(card(str(bank["size"]), "bank vectors"))
    html = '<div class="cards">' + "".join(cards) + "</div>"
    if "miou" in report:
        html += f'<p class="note" id="averaging">{escape(AVERAGING.format(n=n))}'
        if bound:
            html += (" Boundary F: contour precision/recall within the tolerance; Boundary IoU (Cheng et al. 2021); "
                     "both averaged over the classes present in ground truth or prediction.")
        html += "</p>"
    return html


def _gallery(items: list[_images.Item], names: Sequence[str], palette: np.ndarray, columns: Sequence[str], *,
             sorts: Sequence[tuple[str, str]], default_sort: str, note: str) -> str:
    used = gallery_classes(items)
    parts = [controls(used, names, sorts), legend(used, names, palette)]
    if note:
        parts.append(f'<p class="note" id="gallery-note">{escape(note)}</p>')
    parts.append(f'<div class="gallery" id="gallery" data-default-sort="{default_sort}">')
    first = columns[0] if columns else None
    for order, item in enumerate(items):
        ious = [item.iou.get(c) for c in columns]
        scored = [v for v in ious if v is not None]
        spread = (max(scored) - min(scored)) if len(scored) > 1 else None
        primary = item.iou.get(first) if first is not None else None
        attrs = (f'data-id="{escape(item.id)}" data-order="{order}" data-classes="{escape(item_names(item, names))}" '
                 f'data-iou="{"" if primary is None else f"{primary:.6f}"}" '
                 f'data-spread="{"" if spread is None else f"{spread:.6f}"}"')
        if len(columns) == 1:
            caption = f'<b>{escape(item.id)}</b> · image IoU <span class="iou">{pct(primary, 1)}</span>'
        else:
            caption = (f'<b>{escape(item.id)}</b> · image IoU per point: '
                       + ", ".join(f"{escape(c)} <span class=\"iou\">{pct(item.iou.get(c), 1)}</span>" for c in columns)
                       + (f" · spread {pct(spread, 1)}" if spread is not None else ""))
        panels = [panel("image", item, None), panel("ground truth", item, item.gt, missing="no ground truth")]
        for column in columns:
            tag = PREDICTION if len(columns) == 1 else f"{column} ({pct(item.iou.get(column), 1)})"
            panels.append(panel(tag, item, item.preds.get(column), missing="no prediction"))
        pred_classes: set[int] = set()
        for classes in item.pred_classes.values():
            pred_classes.update(classes)
        class_line = (f'<div class="classes">ground truth: {class_list(item.gt_classes, names, palette)}'
                      f' &nbsp;·&nbsp; predicted: {class_list(sorted(pred_classes), names, palette)}</div>')
        parts.append(f'<figure class="item" {attrs}><figcaption>{caption}</figcaption>'
                     f'<div class="panels">{"".join(panels)}</div>{class_line}</figure>')
    parts.append("</div>")
    return "".join(parts)


def _cap_note(shown: int, total: int, limit: int) -> str:
    if total <= limit:
        return ""
    return (
        f"The gallery shows {shown} of {total} images (capped at {limit}): the {limit // 2} with the lowest image IoU "
        "and the rest spread evenly over the others by IoU."
    )


def run_html(
    report: dict[str, Any],
    samples: Sequence[Any],
    predictions_dir: Path | None,
    class_names: Sequence[str],
    *,
    title: str = "ModuSeg run",
    limit: int = GALLERY_LIMIT,
    palette: np.ndarray | None = None,
    extra: str = "",
) -> str:
    """The page of one run: ``report`` is its report.json; ``samples`` the eval split's samples
    (``id``, ``image_path``, ``mask_path``); ``predictions_dir`` its ``{id}.png`` class maps."""
    palette = voc_palette() if palette is None else palette
    names = list(class_names)
    columns = {PREDICTION: Path(predictions_dir)} if predictions_dir is not None else {}
    stats = _images.image_stats(samples, columns, len(names)) if columns else None
    body = [
        f"<h1>{escape(title)}</h1>",
        oracle_banner(bool(report.get("oracle"))),
        _skipped_text(report.get("skipped")),
    ]
    cfg = report.get("config") or {}
    ev = report.get("eval") or {}
    if ev:
        body.append(
            f'<p class="note">Evaluated on <code>{escape(str(ev.get("name")))}</code> split '
            f"<code>{escape(str(ev.get('split')))}</code>"
            + (
                "; components: "
                + ", ".join(
                    f"{k} <code>{escape(str(cfg[k]['name']))}</code>"
                    for k in RUN_KINDS[1:]
                    if isinstance(cfg.get(k), dict)
                )
                if cfg
                else ""
            )
            + ".</p>"
        )
    body.append(headline(report))
    body.append('<h2 id="scores">Per-class IoU and confusion</h2><div class="row2">')
    if report.get("per_class_iou"):
        body.append(
            "<div><b>Per-class IoU</b> (best first)"
            + iou_bars(report["per_class_iou"], palette, _ids_by_name(names))
            + "</div>"
        )
    if stats is not None and stats.with_gt and stats.matrix is not None:
        body.append(f'<div><b>Confusion matrix</b> (rows: ground truth, share of its pixels; {stats.with_gt} images)'
                    + heatmap(stats.matrix, names) + "</div>")
    body.append("</div>")
    if stats is not None:
        iou = stats.iou[PREDICTION]
        chosen = _images.choose(stats.ids, iou, limit)
        items = _images.build_items(samples, columns, len(names), chosen, stats)
        body.append(f'<h2 id="gallery-title">Gallery ({len(items)} images)</h2>')
        body.append(
            '<p class="note">Each row: the photo, the ground truth and the prediction over it (fill and outline '
            "in the class colour; the legend names the colours). Image IoU: mean over the classes in that image's "
            "ground truth or prediction. Click a class in the legend to show only images with it; the URL keeps "
            "the view (e.g. <code>#sort=iou-asc&amp;class=person</code>).</p>"
        )
        body.append(
            _gallery(
                items,
                names,
                palette,
                [PREDICTION],
                sorts=[
                    ("iou-asc", "image IoU, worst first"),
                    ("iou-desc", "image IoU, best first"),
                    ("id-asc", "image id"),
                ],
                default_sort="iou-asc",
                note=_cap_note(len(items), len(stats.ids), limit),
            )
        )
        css = photo_css(items)
    else:
        css = ""
    body.append(extra)  # the evidence of --explain (``evidence.py``)
    if cfg:
        body.append('<h2 id="components">Components and options</h2>' + components_table(cfg, RUN_KINDS))
    seconds = report.get("seconds") or {}
    if seconds:
        rows = "".join(f'<tr><td>{escape(k)}</td><td class="n">{v:.2f}</td></tr>' for k, v in seconds.items())
        body.append(
            timed(f"<details><summary>Timing (seconds)</summary><table><tbody>{rows}</tbody></table></details>")
        )
    body.append('<footer>Written by moduseg; self-contained (no network). Numbers from report.json.</footer>')
    return document(title, "".join(body), css)


def write_run_html(out_dir: Path, report: dict[str, Any], samples: Sequence[Any], class_names: Sequence[str], *,
                   predictions: str = "predictions", name: str = "report.html", **options: Any) -> Path:
    """Write ``out_dir/report.html`` for a run folder (predictions in ``out_dir/predictions``)."""
    out_dir = Path(out_dir)
    folder = out_dir / predictions
    html = run_html(report, samples, folder if folder.is_dir() else None, class_names, **options)
    write_text(out_dir / name, html)
    return out_dir / name


# -- sweeps ---------------------------------------------------------------------------------------

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

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
    components_table,
    document,
    oracle_banner,
    photo_css,
    timed,
)
from moduseg_core.report_html.parts import (
    GALLERY_LIMIT,
    PREDICTION,
    RUN_KINDS,
    SWEEP_GALLERY_LIMIT,
    SWEEP_POINT_LIMIT,
    _cap_note,
    _gallery,
    _ids_by_name,
    _skipped_text,
    headline,
)
from moduseg_core.report_html.sweep import sweep_html, write_sweep_html


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


__all__ = [
    "GALLERY_LIMIT",
    "SWEEP_GALLERY_LIMIT",
    "SWEEP_POINT_LIMIT",
    "headline",
    "run_html",
    "sweep_html",
    "write_run_html",
    "write_sweep_html",
]

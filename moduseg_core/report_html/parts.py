"""What a run's page and a sweep's page share: the gallery and its caps, the headline numbers, the notes."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from moduseg_core.report_html import images as _images
from moduseg_core.report_html.page import (
    AVERAGING,
    card,
    class_list,
    controls,
    gallery_classes,
    item_names,
    legend,
    panel,
    pct,
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

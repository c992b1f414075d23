"""Inline SVG charts for the HTML report (no JavaScript library): the per-class IoU as a sorted
bar chart and the confusion matrix as a heat map with class names."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np


def _rgb(colour: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour[:3]))


def iou_bars(
    per_class: dict[str, float | None], palette: np.ndarray, class_ids: dict[str, int], *, width: int = 470
) -> str:
    """Horizontal bars of the classes with an IoU, best first, each with its colour swatch and value;
    classes without one (absent from ground truth and prediction) are named under the chart."""
    scored = sorted(((n, v) for n, v in per_class.items() if v is not None), key=lambda nv: (-nv[1], nv[0]))
    missing = [n for n, v in per_class.items() if v is None]
    label_w, value_w, row = 120, 52, 20
    bar_w = width - label_w - value_w
    height = row * len(scored) + 28
    parts = [
        f'<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-class IoU, best first">'
    ]
    for tick in (0, 25, 50, 75, 100):
        x = label_w + bar_w * tick / 100
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 4}" class="tick" text-anchor="middle">{tick}</text>')
    for i, (name, value) in enumerate(scored):
        y = i * row
        colour = _rgb(palette[class_ids.get(name, 0) % 256])
        w = max(0.5, bar_w * value)
        parts.append(
            f'<g class="bar" data-class="{escape(name)}"><title>{escape(name)}: IoU {100 * value:.2f}</title>'
            f'<rect x="2" y="{y + 4}" width="10" height="{row - 8}" fill="{colour}" stroke="#333" stroke-width="0.5"/>'
            f'<text x="16" y="{y + row - 6}" class="label">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}" stroke="#333" '
            'stroke-width="0.5"/>'
            f'<text x="{label_w + bar_w + 4}" y="{y + row - 6}" class="value">{100 * value:.1f}</text></g>'
        )
    parts.append("</svg>")
    html = "".join(parts)
    if missing:
        html += f'<p class="note">No IoU (in neither ground truth nor prediction): {escape(", ".join(missing))}.</p>'
    return html


def heatmap(matrix: np.ndarray, names: Sequence[str], *, limit: int = 40) -> str:
    """The confusion matrix (rows ground truth, columns prediction) as an SVG heat map; each row is
    normalised by its ground-truth pixels (the cell shade is the share of that class's pixels
    predicted as the column's class). Classes with no pixel in either are left out; beyond ``limit``
    classes only the ``limit`` with the most ground-truth pixels are shown."""
    matrix = np.asarray(matrix, dtype=np.float64)
    used = np.flatnonzero((matrix.sum(0) + matrix.sum(1)) > 0)
    note = ""
    if len(used) > limit:
        used = used[np.argsort(-matrix.sum(1)[used], kind="stable")[:limit]]
        used = np.sort(used)
        note = f"Showing the {limit} classes with the most ground-truth pixels."
    if not len(used):
        return '<p class="note">No pixels with ground truth to tabulate.</p>'
    ids: list[int] = used.tolist()  # python ints index the class names
    sub = matrix[np.ix_(used, used)]
    rows = sub.sum(1, keepdims=True)
    share = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    n = len(used)
    cell = 22 if n <= 25 else 14
    label = max(60, 7 * max(len(names[c]) for c in ids) + 10)
    size_x, size_y = label + n * cell + label // 2 + 10, label + n * cell + 16
    parts = [
        f'<svg class="chart heat" xmlns="http://www.w3.org/2000/svg" width="{size_x}" height="{size_y}" '
        f'viewBox="0 0 {size_x} {size_y}" role="img" aria-label="confusion matrix">'
    ]
    for j, c in enumerate(ids):  # column labels, rotated
        x = label + j * cell + cell / 2 + 4
        parts.append(
            f'<text class="label" transform="translate({x:.1f},{label - 4}) rotate(-60)">{escape(names[c])}</text>'
        )
    for i, r in enumerate(ids):
        y = label + i * cell
        parts.append(
            f'<text class="label" x="{label - 4}" y="{y + cell * 0.7:.1f}" text-anchor="end">{escape(names[r])}</text>'
        )
        for j, c in enumerate(ids):
            v = share[i, j]
            # white → dark blue; the diagonal in green tones so correct pixels read apart from confusions
            if i == j:
                fill = f"rgb({int(255 - 200 * v)},{int(255 - 90 * v)},{int(255 - 200 * v)})"
            else:
                fill = f"rgb({int(255 - 40 * v)},{int(255 - 200 * v)},{int(255 - 200 * v)})"
            title = f"{names[r]} → {names[c]}: {100 * v:.1f}% of {names[r]} pixels ({int(sub[i, j])} px)"
            parts.append(
                f'<rect x="{label + j * cell}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" class="cell">'
                f"<title>{escape(title)}</title></rect>"
            )
            if cell >= 22 and v >= 0.05:
                colour = "#fff" if v > 0.6 else "#222"
                parts.append(
                    f'<text x="{label + j * cell + cell / 2}" y="{y + cell * 0.68:.1f}" text-anchor="middle" '
                    f'class="num" fill="{colour}">{round(100 * v)}</text>'
                )
    parts.append(
        f'<text class="axis" x="{label + n * cell / 2}" y="{size_y - 1}" text-anchor="middle">prediction →</text>'
        f'<text class="axis" transform="translate(10,{label + n * cell / 2}) rotate(-90)" text-anchor="middle">ground '
        'truth →</text>'
    )
    parts.append("</svg>")
    html = "".join(parts)
    if note:
        html += f'<p class="note">{escape(note)}</p>'
    return html

"""Assembling report.html: the headline, the charts, the gallery, and (sweeps) the results table and
plots. One string, with its CSS, JavaScript and pictures inline."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from importlib.resources import files
from typing import Any

import numpy as np

from moduseg_core.report_html.images import Item

ORACLE_TEXT = (
    "ORACLE labeler: the bank was built from ground-truth masks. These scores are an upper bound for these "
    "components, not a weakly supervised result."
)
AVERAGING = (
    "mIoU: each class's IoU = TP / (TP + FP + FN) over all pixels of all scored images (one confusion matrix "
    "for the split), then the plain mean over the {n} classes present in ground truth or prediction; ignore "
    "pixels (255) are left out."
)


def static(name: str) -> str:
    return (files(__package__) / "static" / name).read_text(encoding="utf-8")


def timed(html: str) -> str:
    """Mark a fragment that holds timings (they differ between any two runs): tools that compare
    reports drop what lies between ``<!--t-->`` and ``<!--/t-->``."""
    return f"<!--t-->{html}<!--/t-->"


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{100 * value:.{digits}f}"


def rgb(colour: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour[:3]))


def tolerance_text(tolerance: float) -> str:
    return f"{tolerance:g} px" if tolerance >= 1 else f"{100 * tolerance:g} % of the image diagonal"


def document(title: str, body: str, extra_css: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # no request leaves the page: everything it shows is inline (data: URIs)
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{static('report.css')}\n{extra_css}</style></head>"
        f'<body><main>{body}<pre id="js-errors"></pre></main><script>{static("report.js")}</script></body></html>\n'
    )


def oracle_banner(oracle: bool) -> str:
    return f'<div class="oracle" id="oracle">⚠ {escape(ORACLE_TEXT)}</div>' if oracle else ""


def card(big: str, title: str, sub: str = "", ident: str = "") -> str:
    attr = f' id="{ident}"' if ident else ""
    return (f'<div class="card"{attr}><div class="sub">{escape(title)}</div><div class="big">{big}</div>'
            + (f'<div class="sub">{sub}</div>' if sub else "") + "</div>")


def components_table(config: dict[str, Any], kinds: Iterable[str]) -> str:
    rows = []
    for kind in kinds:
        part = config.get(kind)
        if not isinstance(part, dict):
            continue
        options = part.get("options") or {}
        text = ", ".join(f"{k}={v}" for k, v in options.items())
        oracle = ' <b class="warn">(ORACLE)</b>' if part.get("oracle") else ""
        rows.append(f"<tr><td>{escape(kind)}</td><td><code>{escape(str(part.get('name')))}</code>{oracle}</td>"
                    f"<td><code>{escape(text) or '–'}</code></td></tr>")
    method = config.get("method")
    if isinstance(method, dict):
        text = ", ".join(f"{k}={v}" for k, v in method.items())
        rows.append(f"<tr><td>method</td><td></td><td><code>{escape(text)}</code></td></tr>")
    return (
        "<table><thead><tr><th>kind</th><th>component</th><th>options</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def legend(class_ids: Iterable[int], names: Sequence[str], palette: np.ndarray) -> str:
    keys = []
    for c in class_ids:
        name = names[c]
        keys.append(
            f'<button type="button" class="key" data-name="{escape(name)}" title="show only images with '
            f'{escape(name)}">'
            f'<span class="sw" style="background:{rgb(palette[c])}"></span>{escape(name)}</button>'
        )
    return '<div class="legend" id="legend">' + "".join(keys) + "</div>"


def class_list(ids: Iterable[int], names: Sequence[str], palette: np.ndarray) -> str:
    return (
        "".join(
            f'<span class="c"><span class="sw" style="background:{rgb(palette[c])}"></span>{escape(names[c])}</span>'
            for c in ids
        )
        or "–"
    )


def controls(class_ids: Iterable[int], names: Sequence[str], sorts: Sequence[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{v}">{escape(t)}</option>' for v, t in sorts)
    classes = '<option value="">all classes</option>' + "".join(
        f'<option value="{escape(names[c])}">{escape(names[c])}</option>' for c in class_ids
    )
    return (
        '<div class="controls">'
        f'<label>sort <select id="sort">{options}</select></label>'
        f'<label>class <select id="class">{classes}</select></label>'
        '<label>mask opacity <input id="alpha" type="range" min="0" max="100" value="100"></label>'
        '<span id="shown" class="note"></span></div>'
    )


def panel(tag: str, item: Item, overlay: str | None, *, missing: str = "") -> str:
    inner = (
        f'<img alt="" src="{overlay}">'
        if overlay
        else (f'<div class="none">{escape(missing)}</div>' if missing else "")
    )
    return (
        f'<div class="panel" style="width:{item.width}px"><span class="tag" title="{escape(tag)}">{escape(tag)}</span>'
        f'<div class="ph" data-photo="{escape(item.id)}" '
        f'style="width:{item.width}px;height:{item.height}px">{inner}</div></div>'
    )


def photo_css(items: Sequence[Item]) -> str:
    """One CSS rule per photo: every panel of the item shows it as its background, and the photo's
    bytes appear once in the file."""
    rules = []
    for item in items:
        if item.photo:
            selector = item.id.replace("\\", "\\\\").replace('"', '\\"')
            rules.append(f'.ph[data-photo="{selector}"]{{background-image:url({item.photo})}}')
    return "\n".join(rules)


def gallery_classes(items: Sequence[Item]) -> list[int]:
    ids: set[int] = set()
    for item in items:
        ids.update(item.gt_classes)
        for classes in item.pred_classes.values():
            ids.update(classes)
    return sorted(ids)


def item_names(item: Item, names: Sequence[str]) -> str:
    ids = set(item.gt_classes)
    for classes in item.pred_classes.values():
        ids.update(classes)
    return "|".join(names[c] for c in sorted(ids))

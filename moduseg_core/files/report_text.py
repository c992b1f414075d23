"""A run's report as Markdown text (``report.md``): the headline, the per-class table, the stages' seconds."""

from __future__ import annotations

from typing import Any

from moduseg_core.contract.kinds import RUN_KINDS
from moduseg_core.files.failures import ERRORS_FILE
from moduseg_core.method.metrics import miou_note

ORACLE_NOTE = "ORACLE labeler: the bank was built from ground-truth masks (an upper bound, not weak supervision)"


def report_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = ["# ModuSeg report", ""]
    if report["oracle"]:
        lines += [f"> **{ORACLE_NOTE}.**", ""]
    parts = ", ".join(f"{k}: `{cfg[k]['name']}`" for k in RUN_KINDS)
    lines += [f"Components — {parts}", ""]
    ev = report["eval"]
    lines += [
        f"Evaluated {ev['images']} images of `{ev['name']}` split `{ev['split']}`; bank of {report['bank']['size']} "
        "vectors.",
        "",
    ]
    skipped = report.get("skipped") or {}
    if skipped.get("bank") or skipped.get("eval"):
        lines += [f"**Skipped images** (on_error: skip; reasons in `{skipped.get('log', ERRORS_FILE)}`): "
                  f"{skipped.get('bank', 0)} of the bank split, {skipped.get('eval', 0)} of the eval split "
                  "(left out of the bank and the scores).", ""]
    if "miou" in report:
        lines += [
            f"**mIoU: {100 * report['miou']:.2f}**  ({miou_note(report)}; pixel accuracy "
            f"{100 * report['pixel_accuracy']:.2f})",
            "",
        ]
        lines += score_table(report)
        lines.append("")
    lines += ["| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["seconds"].items()]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.2f}"


def score_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: per-class IoU, and boundary F-score / Boundary IoU when the report has them."""
    boundary = report.get("boundary")
    if not boundary:
        rows = ["| class | IoU |", "|---|---:|"]
        rows += [f"| {name} | {_pct(value)} |" for name, value in report["per_class_iou"].items()]
        return rows
    rows = [
        (
            f"Boundary F-score **{_pct(boundary['f_score'])}** (tolerance "
            f"{boundary_tolerance_text(boundary['tolerance'])}), "
            f"Boundary IoU **{_pct(boundary['iou'])}** (dilation {boundary['dilation_ratio']:g} of the diagonal)."
        ),
        "",
        "| class | IoU | boundary F | Boundary IoU |",
        "|---|---:|---:|---:|",
    ]
    for name, value in report["per_class_iou"].items():
        rows.append(
            f"| {name} | {_pct(value)} | {_pct(boundary['per_class_f'].get(name))} | "
            f"{_pct(boundary['per_class_iou'].get(name))} |"
        )
    return rows


def boundary_tolerance_text(tolerance: float) -> str:
    return f"{tolerance:g} px" if tolerance >= 1 else f"{100 * tolerance:g} % of the diagonal"

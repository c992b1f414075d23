"""A sweep's results: ``results.csv``, ``results.json``, ``results.md`` and PNG plots.

One row per point: every axis, mIoU, pixel accuracy, boundary F-score and Boundary IoU
(means and per class), per-class IoU, seconds per stage, cache hits, encoder passes.
The plots (matplotlib, imported only here) are ``plots/miou.png`` (mIoU, boundary F and
Boundary IoU per point), ``plots/per_class_iou.png`` (per-class IoU of the best and the
worst point, or of every point when there are at most four) and, when two or more axes
vary, ``plots/heatmap.png`` (mIoU with the last varying axis across and the other axes down).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from moduseg_core.ablate.sweep import Sweep, format_value
from moduseg_core.files.io import atomic_path, write_json, write_text
from moduseg_core.method.metrics import miou_note
from moduseg_core.pipeline.runner import ORACLE_NOTE

PLOTS = ("miou.png", "per_class_iou.png", "heatmap.png")


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.2f}"


def _groups(sweep: Sweep) -> list[tuple[str, list[str]]]:
    """Varying axis groups: each grid axis alone, the zip axes together (title, keys)."""
    groups = [(k, [k]) for k, v in sweep.grid.items() if len(v) > 1]
    if sweep.zip and len(next(iter(sweep.zip.values()))) > 1:
        groups.append((" / ".join(sweep.zip), list(sweep.zip)))
    return groups


def _group_value(report: dict[str, Any], keys: list[str]) -> str:
    return " / ".join(format_value(report["axes"].get(k)) for k in keys)


def rows(sweep: Sweep, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (one per point) for the CSV."""
    stages = sorted({s for r in reports for s in r.get("seconds", {}) if s != "wall"})
    cache_stages = sorted({s for r in reports for s in r.get("cache", {})})
    out = []
    for r in reports:
        bound = r.get("boundary") or {}
        row: dict[str, Any] = {"point": r["point"], "label": r["label"]}
        for key in sweep.axes:
            row[key] = format_value(r["axes"].get(key))
        row |= {
            "miou": r.get("miou"),
            "pixel_accuracy": r.get("pixel_accuracy"),
            "boundary_f": bound.get("f_score"),
            "boundary_iou": bound.get("iou"),
        }
        for name, value in (r.get("per_class_iou") or {}).items():
            row[f"iou/{name}"] = value
        for name, value in (bound.get("per_class_f") or {}).items():
            row[f"bf/{name}"] = value
        for name, value in (bound.get("per_class_iou") or {}).items():
            row[f"biou/{name}"] = value
        for stage in stages:
            row[f"seconds/{stage}"] = r.get("seconds", {}).get(stage, 0.0)
        row["seconds/wall"] = r.get("seconds", {}).get("wall")
        for stage in cache_stages:
            counts = r.get("cache", {}).get(stage, {})
            row[f"cache_hit/{stage}"] = counts.get("hit", 0)
            row[f"cache_miss/{stage}"] = counts.get("miss", 0)
        row["first_seconds/wall"] = (r.get("first_seconds") or r.get("seconds") or {}).get("wall")
        row["encoder_passes"] = r.get("encoder", {}).get("passes")
        row["scores_cached"] = r.get("scores_cached")
        out.append(row)
    return out


def markdown(sweep: Sweep, reports: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [f"# Sweep `{sweep.name}`", ""]
    if sweep.description:
        lines += [sweep.description.strip(), ""]
    if any(r.get("oracle") for r in reports):
        lines += [f"> **{ORACLE_NOTE}.**", ""]
    enc = summary.get("encoder", {})
    text = f"{summary['points']} points, wall {summary['wall']:.1f} s"
    if summary.get("cached"):
        saved = enc.get("saved_fraction")
        text += (
            f"; encoder passes {enc.get('passes')} (uncached runs would need {enc.get('uncached_passes')}"
            + (f", {100 * saved:.1f} % saved" if saved is not None else "")
            + ")"
        )
    lines += [text + ".", ""]
    axes = sweep.axes
    best = max((r.get("miou") or -1 for r in reports), default=None)
    head = ["#", *(f"`{a}`" for a in axes), "mIoU", "boundary F", "Boundary IoU", "seconds", "computed"]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] + ["---"] * len(axes) + ["---:"] * 4 + ["---"]) + "|",
    ]
    for r in reports:
        bound = r.get("boundary") or {}
        miou = _pct(r.get("miou"))
        if r.get("miou") is not None and r.get("miou") == best:
            miou = f"**{miou}**"
        if r.get("scores_cached"):
            first = (r.get("first_seconds") or {}).get("wall")
            computed = "cached" + (f" (computed in {first:.1f} s)" if first is not None else "")
        else:
            computed = computed_text(r)
        cells = [
            str(r["point"]),
            *(format_value(r["axes"].get(a)) for a in axes),
            miou,
            _pct(bound.get("f_score")),
            _pct(bound.get("iou")),
            f"{r.get('seconds', {}).get('wall', 0):.1f}",
            computed,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if reports and reports[0].get("boundary"):
        b = reports[0]["boundary"]
        tol = f"{b['tolerance']:g} px" if b["tolerance"] >= 1 else f"{100 * b['tolerance']:g} % of the image diagonal"
        note = (f"Boundary F: contour precision/recall within {tol}; Boundary IoU: dilation {b['dilation_ratio']:g} "
                "of the diagonal (Cheng et al. 2021). Means over classes present in ground truth or prediction.")
        lines += [note, ""]
    averages = sorted({r.get("miou_average", "present") for r in reports})
    if averages:
        which = (
            f"the mean over {averages[0]} classes"
            if len(averages) == 1
            else "each point's own average (its report says which)"
        )
        lines += [f"mIoU: {which} (`method.miou_average`).", ""]
    lines += ["Per-point reports: `points/*/report.md`; plots: `plots/`; the page: `report.html`.", ""]
    return "\n".join(lines)


def point_line(report: dict[str, Any], total: int) -> str:
    """One point's result as ``moduseg ablate`` prints it when the point finishes."""
    bound = report.get("boundary") or {}
    computed = "all cached" if report.get("scores_cached") else f"computed: {computed_text(report)}"
    return (
        f"[{report['point'] + 1}/{total}] {report['label']}: mIoU {100 * report['miou']:.2f} ({miou_note(report)}), "
        f"boundary F {100 * bound.get('f_score', float('nan')):.2f}, Boundary IoU "
        f"{100 * bound.get('iou', float('nan')):.2f} "
        f"({report['seconds']['wall']:.1f} s; {computed})"
    )


def summary_line(reports: list[dict[str, Any]], summary: dict[str, Any], cached: bool) -> str:
    """The sweep's closing line: points, wall time and, through the cache, the encoder passes saved."""
    enc = summary["encoder"]
    line = f"{len(reports)} points in {summary['wall']:.1f} s"
    if cached and enc.get("uncached_passes"):
        line += (f"; encoder ran on {enc['passes']} images (one-by-one uncached runs: {enc['uncached_passes']}, "
                 f"{100 * enc['saved_fraction']:.1f} % saved)")
    return line


def computed_text(report: dict[str, Any]) -> str:
    """Which stages ran for this point (cache misses), e.g. 'bank, 103 pred'."""
    if "cache" not in report:
        return "uncached run"
    cache = report["cache"]
    parts = []
    if cache.get("banks", {}).get("miss"):
        parts.append("bank")
    for stage, short in (("features", "enc"), ("proposals", "prop"), ("pooled", "pool"), ("predictions", "pred")):
        n = cache.get(stage, {}).get("miss", 0)
        if n:
            parts.append(f"{n} {short}")
    return ", ".join(parts) or "–"


def write_results(
    out_dir: Path, sweep: Sweep, reports: list[dict[str, Any]], summary: dict[str, Any], *, plots: bool = True
) -> None:
    out_dir = Path(out_dir)
    flat = rows(sweep, reports)
    fields: list[str] = []
    for row in flat:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in flat:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text(out_dir / "results.csv", buffer.getvalue())
    points = []
    for r in reports:
        points.append(
            {
                k: r.get(k)
                for k in (
                    "point",
                    "label",
                    "slug",
                    "axes",
                    "miou",
                    "pixel_accuracy",
                    "per_class_iou",
                    "boundary",
                    "masks",
                    "seconds",
                    "first_seconds",
                    "cache",
                    "encoder",
                    "scores_cached",
                    "oracle",
                )
            }
        )
    write_json(
        out_dir / "results.json", {"sweep": summary, "axes": {"grid": sweep.grid, "zip": sweep.zip}, "points": points}
    )
    write_text(out_dir / "results.md", markdown(sweep, reports, summary))
    if plots and reports:
        plot(out_dir / "plots", sweep, reports)


def plot(folder: Path, sweep: Sweep, reports: list[dict[str, Any]]) -> list[Path]:
    """Write the PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    groups = _groups(sweep)
    axis_title = " / ".join(title for title, _ in groups) or "point"

    def short(r: dict[str, Any]) -> str:
        values = " / ".join(_group_value(r, keys) for _, keys in groups)
        return f"{r['point']}: {values}" if values else str(r["point"])

    labels = [short(r) for r in reports]

    def pct(values):
        return np.array([np.nan if v is None else 100 * v for v in values], dtype=float)

    # mIoU, boundary F and Boundary IoU per point
    miou = pct([r.get("miou") for r in reports])
    bf = pct([(r.get("boundary") or {}).get("f_score") for r in reports])
    biou = pct([(r.get("boundary") or {}).get("iou") for r in reports])
    n = len(reports)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 5.5))
    x = np.arange(n)
    width = 0.27
    ax.bar(x - width, miou, width, label="mIoU", color="#2b6cb0")
    ax.bar(x, bf, width, label="boundary F", color="#dd6b20")
    ax.bar(x + width, biou, width, label="Boundary IoU", color="#38a169")
    for xi, v in zip(x, miou, strict=True):
        if v == v:
            ax.text(xi - width, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, labels, rotation=60 if n > 3 else 0, ha="right" if n > 3 else "center", fontsize=7)
    ax.set_xlabel(axis_title, fontsize=8)
    ax.set_ylabel("score (%)")
    top = np.nanmax(np.concatenate([miou, bf, biou])) if n else 1.0
    ax.set_ylim(0, min(100.0, (top if top == top else 1.0) * 1.25 + 2))
    ax.set_title(f"{sweep.name}: scores per point")
    ax.legend(loc="upper right", ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, folder / "miou.png"))
    plt.close(fig)

    # per-class IoU of the best and worst points (every point when there are few)
    order = sorted(range(n), key=lambda i: -(reports[i].get("miou") or -1))
    chosen = order if n <= 4 else [order[0], order[-1]]
    class_names = [
        c for c in (reports[chosen[0]].get("per_class_iou") or {})
        if any((reports[i].get("per_class_iou") or {}).get(c) is not None for i in chosen)
    ]
    if class_names:
        fig, ax = plt.subplots(figsize=(min(18.0, max(7.0, 0.22 * len(class_names) * len(chosen) + 3)), 5))
        x = np.arange(len(class_names))
        width = 0.8 / len(chosen)
        for j, i in enumerate(chosen):
            values = pct([reports[i]["per_class_iou"].get(c) for c in class_names])
            tag = "best" if i == order[0] else ("worst" if i == order[-1] else "")
            name = short(reports[i]) + (f" ({tag})" if tag and n > 1 else "")
            ax.bar(x + (j - (len(chosen) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, class_names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{sweep.name}: per-class IoU (classes in the ground truth or a prediction)", fontsize=10)
        ax.legend(fontsize=7, loc="upper right", title=axis_title, title_fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, folder / "per_class_iou.png"))
        plt.close(fig)

    # heatmap: last varying axis across, the others down
    if len(groups) >= 2:
        col_title, col_keys = groups[-1]
        row_groups = groups[:-1]
        cols: list[str] = []
        rows_: list[str] = []
        cell: dict[tuple[str, str], float] = {}
        for r in reports:
            c = _group_value(r, col_keys)
            rr = ", ".join(_group_value(r, keys) for _, keys in row_groups)
            cols += [c] if c not in cols else []
            rows_ += [rr] if rr not in rows_ else []
            cell[(rr, c)] = np.nan if r.get("miou") is None else 100 * r["miou"]
        grid = np.array([[cell.get((rr, c), np.nan) for c in cols] for rr in rows_])
        fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(cols) + 3.5), max(3.0, 0.42 * len(rows_) + 1.6)))
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(rows_)), rows_, fontsize=8)
        ax.set_xlabel(col_title)
        ax.set_ylabel(", ".join(title for title, _ in row_groups), fontsize=8)
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0
        for (i, j), v in np.ndenumerate(grid):
            if v == v:
                ax.text(
                    j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white" if v < middle else "black"
                )
        fig.colorbar(image, ax=ax, label="mIoU (%)")
        ax.set_title(f"{sweep.name}: mIoU")
        fig.tight_layout()
        written.append(_save(fig, folder / "heatmap.png"))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def load_results(out_dir: Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "results.json").read_text())


def sweep_summary(sweep: Sweep, reports: list[dict[str, Any]], cache: Any, wall: float) -> dict[str, Any]:
    """The sweep's summary: its points, wall time, encoder passes saved by the cache and the cache's hits and
    misses per stage, summed over the points (computed here or by Ray workers)."""
    from moduseg_core.cache import STAGES

    uncached = sum(r.get("encoder", {}).get("uncached_passes", 0) for r in reports)
    passes = sum(r.get("encoder", {}).get("passes", 0) for r in reports)
    out: dict[str, Any] = {
        "name": sweep.name,
        "source": sweep.source,
        "points": len(reports),
        "wall": round(wall, 3),
        "cached": cache is not None,
        "encoder": {
            "passes": passes,
            "uncached_passes": uncached,
            "saved_fraction": (1 - passes / uncached) if uncached else None,
        },
    }
    if cache is not None:  # summed over the points (computed here or by Ray workers)
        counts = {stage: {"hit": 0, "miss": 0} for stage in STAGES}
        for report in reports:
            for stage, count in report.get("cache", {}).items():
                counts[stage]["hit"] += count["hit"]
                counts[stage]["miss"] += count["miss"]
        out["cache_root"] = str(cache.root)
        out["cache"] = {stage: count for stage, count in counts.items() if count["hit"] or count["miss"]}
    return out

"""Scoring a labeler's pseudo masks on the bank split (``moduseg evaluate-labels``).

The bank is only as good as its pseudo masks, so this scores them directly: the labeler runs
over the bank split exactly as ``build-bank`` runs it (``fit`` on the whole split first, when
the labeler has one) and every map is compared with the ground truth. Pixels the labeler leaves
as ignore (255) count as misses of their true class, never as a hit or a false alarm.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.failures import ERRORS_FILE, ErrorLog

ORACLE_LABELS_NOTE = (
    "ORACLE labeler: its pseudo masks are the ground-truth masks, so this score is an upper bound "
    "(100 by construction), not a weakly supervised result"
)


def evaluate_labeler(
    config, *, limit: int | None = None, out: Path | None = None, save_masks: bool = False, output=None
) -> dict[str, Any]:
    """Run the config's labeler over its bank split and score the maps against ground truth.
    ``output`` (an ``outputs.OutputDir`` for ``out``, checked by the caller) follows the output-folder rules."""
    from moduseg_core.contract.components import build, validate
    from moduseg_core.pipeline.runner import open_dataset

    validate(config, ("labeler",))
    dataset, samples = open_dataset(config, config.bank_split, limit or config.bank_limit)
    without = [s.id for s in samples if s.mask_path is None]
    if without:
        raise ModusegError(
            f"image {without[0]!r} of split {config.bank_split!r} has no ground-truth mask ({len(without)} such "
            "images); "
            "evaluate-labels needs a split with masks (set --set bank_split=... or the dataset's mask folder)"
        )
    labeler = build("labeler", config.labeler)
    errors = ErrorLog(config.on_error)
    if out is not None:
        from moduseg_core.files.outputs import OutputDir

        if output is None:
            output = OutputDir(out, "evaluate-labels")
        planned = ["labels_report.json", "labels_report.md", ERRORS_FILE]
        planned += [f"pseudo_masks/{s.id}.png" for s in samples] if save_masks else []
        output.begin(planned)
        errors.open(out)
    try:
        report = _score_labels(config, labeler, dataset, samples, out, save_masks, errors)
    except BaseException:
        if output is not None:
            output.close()  # the marker stays incomplete
        raise
    if output is not None:
        output.finish()
    return report


def _score_labels(config, labeler, dataset, samples, out: Path | None, save_masks: bool,
                  errors: ErrorLog) -> dict[str, Any]:
    from moduseg_core.contract.components import is_oracle
    from moduseg_core.contract.types import BACKGROUND, IGNORE_INDEX
    from moduseg_core.files.io import read_image, read_mask, write_png
    from moduseg_core.files.progress import progress
    from moduseg_core.method.metrics import confusion, scores
    from moduseg_core.pipeline.bank import check_class_map
    from moduseg_core.pipeline.runner import dataset_info, score_rules

    class_names = list(dataset.component.class_names)
    n = len(class_names)
    seconds = {"fit": 0.0, "label": 0.0}
    fit = getattr(labeler.component, "fit", None)
    if callable(fit):
        t0 = time.perf_counter()
        fit(samples)
        seconds["fit"] = time.perf_counter() - t0
    # one extra column: pixels the labeler left as ignore (misses of their true class)
    matrix = np.zeros((n + 1, n + 1), np.int64)
    outside = 0
    for sample in progress(samples, total=len(samples), desc="labels"):
        stage = "read"
        try:  # one image's failure: the job stops (on_error: fail) or logs it and goes on (skip)
            image = read_image(sample.image_path)
            stage = "label"
            t0 = time.perf_counter()
            classes = np.asarray(labeler.component.label(image, sample))
            seconds["label"] += time.perf_counter() - t0
            check_class_map(classes, sample, image.shape[:2], n, labeler.name)
            stage = "ground truth"
            gt = read_mask(sample.mask_path, expected_hw=image.shape[:2])
        except Exception as exc:  # noqa: BLE001 (recorded per image; errors.add re-raises unless on_error=skip)
            errors.add(sample, stage, exc)
            continue
        allowed = np.zeros(256, bool)
        allowed[[BACKGROUND, IGNORE_INDEX, *sample.labels]] = True
        outside += int((~allowed[classes.astype(np.int64)]).sum())
        matrix += confusion(gt, np.where(classes == IGNORE_INDEX, n, classes), n + 1)
        if out is not None and save_masks:
            write_png(Path(out) / "pseudo_masks" / f"{sample.id}.png", classes)
    errors.check_some_succeeded(len(samples))
    rules = score_rules(config, dataset.component)
    iou = scores(matrix, not_scored=rules["not_scored"]).iou[:n]
    present = ~np.isnan(iou)
    scored = [c for c in range(n) if c not in rules["not_scored"]]
    means = {
        "present": float(iou[present].mean()) if present.any() else float("nan"),
        "all": float(np.nan_to_num(iou[scored], nan=0.0).mean()) if scored else float("nan"),
    }
    total = int(matrix.sum())
    oracle = is_oracle(config.labeler)
    report: dict[str, Any] = {
        "oracle": oracle,
        "note": ORACLE_LABELS_NOTE if oracle else "pseudo masks from image-level labels, scored against ground truth",
        "labeler": {"name": labeler.name, "options": labeler.options.model_dump(mode="json")},
        "dataset": dataset_info(dataset, samples),
        "miou": means[rules["average"]],
        "miou_average": rules["average"],
        "miou_present": means["present"],
        "miou_all": means["all"],
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou, strict=True)},
        "pixels_outside_labels": outside,
        "ignored_gt_pixels": int(matrix[:, n].sum()),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "skipped": {"images": len(errors), **({"log": ERRORS_FILE} if len(errors) else {})},
    }
    if out is not None:
        from moduseg_core.files.io import write_json, write_text

        write_json(Path(out) / "labels_report.json", report)
        write_text(Path(out) / "labels_report.md", labels_markdown(report))
    return report


def labels_markdown(report: dict[str, Any]) -> str:
    from moduseg_core.method.metrics import miou_note

    lines = ["# Pseudo-mask quality", ""]
    if report["oracle"]:
        lines += [f"> **{ORACLE_LABELS_NOTE}.**", ""]
    ds = report["dataset"]
    lines += [
        f"Labeler `{report['labeler']['name']}` on {ds['images']} images of `{ds['name']}` split `{ds['split']}`.",
        "",
        f"**pseudo-mask mIoU: {100 * report['miou']:.2f}**  ({miou_note(report)}; pixel accuracy "
        f"{100 * report['pixel_accuracy']:.2f}; "
        f"pixels outside the image labels: {report['pixels_outside_labels']}; "
        f"ground-truth pixels left as ignore: {report['ignored_gt_pixels']})",
        "",
        "| class | IoU |",
        "|---|---:|",
    ]
    for name, value in report["per_class_iou"].items():
        lines.append(f"| {name} | {'–' if value is None else f'{100 * value:.2f}'} |")
    lines += ["", "| stage | seconds |", "|---|---:|"] + [f"| {k} | {v:.2f} |" for k, v in report["seconds"].items()]
    skipped = report.get("skipped", {}).get("images", 0)
    if skipped:
        lines += ["", f"**Skipped images**: {skipped} (on_error: skip; not in the scores), reasons in `{ERRORS_FILE}`."]
    return "\n".join(lines) + "\n"

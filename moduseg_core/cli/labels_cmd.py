"""`moduseg evaluate-labels`: parse the arguments, score the pseudo masks (``label_eval``), print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.cli.common import (
    ConfigOpt,
    DatasetOpt,
    LabelerOpt,
    OnErrorOpt,
    OverwriteOpt,
    SetOpt,
    compose,
    exit_code,
)
from moduseg_core.contract.errors import ModusegError


def evaluate_labels(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    labeler: LabelerOpt = None,
    sets: SetOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N images of the bank split.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write labels_report.md/json here.")] = None,
    save_masks: Annotated[
        bool, typer.Option("--save-masks", help="Also write the pseudo masks as PNGs under OUT/pseudo_masks.")
    ] = False,
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
) -> int:
    """Score a labeler's pseudo masks on the bank split against ground truth (per-class IoU, mIoU)."""
    from moduseg_core.files.outputs import prepare
    from moduseg_core.method.metrics import miou_note
    from moduseg_core.pipeline.label_eval import ORACLE_LABELS_NOTE, evaluate_labeler

    if save_masks and out is None:
        raise ModusegError("--save-masks needs --out DIR to write the pseudo masks into")
    output = prepare(out, "evaluate-labels", overwrite=overwrite)
    cfg = compose(config, sets, on_error, dataset=dataset, labeler=labeler)
    report = evaluate_labeler(cfg, limit=limit, out=out, save_masks=save_masks, output=output)
    if report["oracle"]:
        typer.secho(f"NOTE: {ORACLE_LABELS_NOTE}.", fg="yellow", err=True)
    per_class = report["per_class_iou"]
    width = max(len(name) for name in per_class)
    for name, value in per_class.items():
        typer.echo(f"  {name:<{width}}  {'   –' if value is None else f'{100 * value:6.2f}'}")
    typer.echo(
        f"pseudo-mask mIoU {100 * report['miou']:.2f} on {report['dataset']['images']} images of split "
        f"{report['dataset']['split']!r} ({miou_note(report)}) (labeler {report['labeler']['name']}; fit "
        f"{report['seconds']['fit']:.1f} s, "
        f"label {report['seconds']['label']:.1f} s)"
    )
    if out is not None:
        typer.echo(f"report: {out / 'labels_report.md'}")
    return exit_code(report["skipped"]["images"])

"""Running a config end to end: open its dataset, build its bank, predict and score a split, write the
run folder and its report. The CLI commands (``cli/run_cmd.py``) parse arguments and call these."""

from __future__ import annotations

import inspect
import itertools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from moduseg_core.contract.components import Built, Timer, build, describe_config, package_versions, validate
from moduseg_core.contract.config import Choice, RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.kinds import BANK_KINDS, RUN_KINDS
from moduseg_core.contract.types import Sample
from moduseg_core.files.failures import ERRORS_FILE, ErrorLog, Failure
from moduseg_core.files.faults import crash_point
from moduseg_core.files.io import IMAGE_SUFFIXES, overlay, read_mask, write_jpeg, write_json, write_png, write_text
from moduseg_core.files.legend import with_legend
from moduseg_core.files.outputs import OutputDir
from moduseg_core.files.progress import Bar, progress
from moduseg_core.files.report_text import ORACLE_NOTE, boundary_tolerance_text, report_markdown, score_table  # noqa: F401 (re-exported)
from moduseg_core.method.metrics import Accumulator, Scores
from moduseg_core.pipeline.bank import Bank
from moduseg_core.pipeline.bank_build import build_bank
from moduseg_core.pipeline.inference import Predictor
from moduseg_core.pipeline.streaming import stream_predictions


def open_dataset(config: RunConfig, split: str, limit: int | None = None) -> tuple[Built, list[Sample]]:
    choice = Choice(name=config.dataset.name, options={**config.dataset.options, "split": split})
    dataset = build("dataset", choice)
    # slice before listing: a dataset that derives labels from masks reads only the first `limit`
    samples = list(dataset.component if limit is None else itertools.islice(dataset.component, limit))
    if not samples:
        raise ModusegError(
            f"dataset {config.dataset.name!r} split {split!r} has no samples; check its root and split list"
        )
    return dataset, samples


def score_rules(config: RunConfig, dataset: Any) -> dict[str, Any]:
    """How a split is scored: ``method.miou_average``, and class 0 left out of the means for a dataset
    without a background class (``has_background = False``: ade20k, cityscapes)."""
    has_background = getattr(dataset, "has_background", True)
    return {"average": config.method.miou_average, "not_scored": () if has_background else (0,)}


def dataset_info(dataset: Built, samples: Sequence[Sample]) -> dict[str, Any]:
    component = dataset.component
    fingerprint = None
    if hasattr(component, "fingerprint"):
        # of the samples used when a limit cut the split (and the dataset can say so without the rest)
        limited = hasattr(component, "__len__") and len(samples) < len(component)
        takes = "samples" in inspect.signature(component.fingerprint).parameters
        fingerprint = component.fingerprint(list(samples)) if limited and takes else component.fingerprint()
    return {
        "name": dataset.name,
        "options": dataset.options.identity(),
        "split": component.split,
        "images": len(samples),
        "fingerprint": fingerprint,
    }


def bank_from_config(
    config: RunConfig, timer: Timer | None = None, *, encoder: Built | None = None, errors: ErrorLog | None = None
) -> Bank:
    """Build the bank of ``config``; ``encoder`` replaces the configured one (e.g. a caching wrapper of it);
    failed images go to ``errors`` (``on_error``)."""
    validate(config, (*BANK_KINDS, "index"))
    dataset, samples = open_dataset(config, config.bank_split, config.bank_limit)
    parts = {kind: build(kind, config.choice(kind)) for kind in ("labeler", "purifier", "aggregator")}
    parts["encoder"] = encoder or build("encoder", config.encoder)
    bank = build_bank(
        samples,
        n_samples=len(samples),
        class_names=list(dataset.component.class_names),
        index_choice=config.index,
        method=config.method,
        dataset_info=dataset_info(dataset, samples),
        timer=timer,
        errors=errors,
        **parts,
    )
    bank.encoder_component = parts["encoder"]
    return bank


def save_bank_from_config(config: RunConfig, out: Path, *, output: Any) -> tuple[Bank, ErrorLog]:
    """Build the bank of ``config`` and save it as the folder ``out`` (``output``: its ``outputs.OutputDir``),
    with ``errors.jsonl`` for the images ``on_error`` skipped; the bank and the error log."""
    errors = ErrorLog(config.on_error)
    bank = bank_from_config(config, errors=errors)
    with output:
        output.begin(["manifest.json", "vectors.npy", "labels.npy", "index/", "provenance.jsonl", ERRORS_FILE])
        errors.open(out)
        bank.save(out)
        output.finish()
    return bank, errors


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def make_predictor(config: RunConfig, bank: Bank) -> Predictor:
    bank.check_encoder(config.encoder, config.aggregator)
    encoder = bank.encoder_component or build("encoder", config.encoder)
    return Predictor(
        bank, build("proposer", config.proposer), encoder, build("aggregator", config.aggregator), config.method
    )


def predict_samples(
    predictor: Predictor,
    samples: Sequence[Sample],
    out_dir: Path | None,
    *,
    n_classes: int,
    overlays: bool = True,
    desc: str = "predict",
    timer: Timer | None = None,
    errors: ErrorLog | None = None,
    class_names: Sequence[str] | None = None,
    explain: Any = None,
) -> Accumulator | None:
    """Predict every sample, write PNG masks (+ overlays) when ``out_dir`` is given, and return
    the confusion matrix and boundary counts of the samples with ground truth (None when none has).
    With ``class_names`` the overlays get a legend of the classes each prediction holds; ``explain``
    (``evidence.ExplainLog``) gets each prediction's evidence, with its ground truth.

    With ``errors`` skipping (``on_error: skip``), an image that fails (or whose ground truth cannot be
    read) is logged there and has no prediction file; the bar still counts it."""
    skip = errors is not None and errors.skip
    evaluation = Accumulator(n_classes)
    with Bar(len(samples), desc) as bar:
        for sample, image, prediction in stream_predictions(predictor, samples, skip_errors=skip):
            if isinstance(prediction, Failure):
                errors.add(sample, prediction.stage, prediction.error)  # type: ignore[union-attr]
                bar.update()
                continue
            gt = None
            t0 = time.perf_counter()
            if sample.mask_path is not None:
                try:
                    gt = read_mask(sample.mask_path, expected_hw=image.shape[:2], n_classes=n_classes)
                except Exception as exc:
                    if not skip:
                        raise
                    errors.add(sample, "mask", exc)  # type: ignore[union-attr]
                    bar.update()
                    continue
            if explain is not None:
                explain.add(sample.id, prediction, gt)
            if out_dir is not None:
                write_png(out_dir / "predictions" / f"{sample.id}.png", prediction.semantic)
                if overlays:
                    picture = overlay(image, prediction.semantic)
                    if class_names is not None:
                        picture = with_legend(picture, prediction.semantic, class_names)
                    write_jpeg(out_dir / "overlays" / f"{sample.id}.jpg", picture)
                crash_point("prediction")
            if gt is not None:
                evaluation.add(gt, prediction.semantic)
                if timer is not None:
                    timer.add("evaluate", time.perf_counter() - t0)
            bar.update()
    return evaluation if evaluation.images else None


def run_outputs(samples: Sequence[Sample], *, overlays: bool, bank: bool, explain: bool = False) -> list[str]:
    """What ``run`` may write into its folder (``outputs.OutputDir.begin``)."""
    planned = ["report.json", "report.md", "report.html", ERRORS_FILE, *(f"predictions/{s.id}.png" for s in samples)]
    planned += ["explain.jsonl", "atlas.html"] if explain else []
    if overlays:
        planned += [f"overlays/{s.id}.jpg" for s in samples]
    return planned + (["bank/"] if bank else [])


def run(
    config: RunConfig,
    out_dir: Path,
    *,
    bank_dir: Path | None = None,
    output: OutputDir | None = None,
    errors: ErrorLog | None = None,
) -> dict[str, Any]:
    """Build (or load) the bank, predict the eval split, evaluate, and write the report.

    ``out_dir`` follows the output-folder rules (``outputs.OutputDir``; ``output`` is the caller's
    checked one): nothing is written until the bank and the predictor are ready, then the folder is
    marked incomplete, and complete once the report is written. ``errors`` (default: a log of
    ``config.on_error`` in ``out_dir``) gets the failed images."""
    validate(config, RUN_KINDS)
    out_dir = Path(out_dir)
    if output is None:
        output = OutputDir(out_dir, "run")
        output.check()
    if bank_dir is not None:
        if os.path.abspath(bank_dir) == os.path.abspath(out_dir):
            raise ModusegError(f"--bank {bank_dir} is the --out folder; write the run into another folder")
        output.protect(bank_dir)
    own_log = errors is None
    errors = errors if errors is not None else ErrorLog(config.on_error)
    timer = Timer()
    started = time.perf_counter()
    dataset, samples = open_dataset(config, config.eval_split, config.eval_limit)  # its errors come before any work
    class_names = list(dataset.component.class_names)
    bank_errors_before = len(errors)
    if bank_dir is not None:
        bank = Bank.load(bank_dir, index=config.index)
    else:
        t0 = time.perf_counter()
        errors.context = {**errors.context, "split": config.bank_split}
        bank = bank_from_config(config, timer, errors=errors)
        timer.add("bank_total", time.perf_counter() - t0)
    if class_names != bank.class_names:
        raise ModusegError(
            f"the bank's classes ({len(bank.class_names)}: {', '.join(bank.class_names[:4])}...) differ from the "
            f"dataset's ({len(class_names)}); evaluate with the dataset the bank was built on"
        )
    predictor = make_predictor(config, bank)
    with output:
        output.begin(run_outputs(samples, overlays=config.overlays, bank=bank_dir is None))
        if own_log:
            errors.open(out_dir)
        if bank_dir is None:
            bank.save(out_dir / "bank")
        eval_errors_before = len(errors)
        errors.context = {**errors.context, "split": config.eval_split}
        t0 = time.perf_counter()
        evaluation = predict_samples(
            predictor,
            samples,
            out_dir,
            n_classes=len(class_names),
            overlays=config.overlays,
            timer=timer,
            errors=errors,
            class_names=class_names,
        )
        timer.add("predict_total", time.perf_counter() - t0)
        errors.check_some_succeeded(len(samples), since=eval_errors_before)
        skipped = {"bank": eval_errors_before - bank_errors_before, "eval": len(errors) - eval_errors_before}
        for stage, seconds in predictor.timer.seconds.items():
            timer.add(f"predict_{stage}", seconds)
        result = evaluation.scores(**score_rules(config, dataset.component)) if evaluation is not None else None
        report = make_report(
            config,
            bank,
            result,
            class_names,
            timer,
            wall=time.perf_counter() - started,
            eval_info=dataset_info(dataset, samples),
            masks={
                "proposed": predictor.masks_seen,
                "kept": predictor.masks_kept,
                "images": len(samples) - skipped["eval"],
            },
        )
        report["skipped"] = skipped | ({"log": ERRORS_FILE} if any(skipped.values()) else {})
        crash_point("report")
        write_report(out_dir, report)
        write_html(out_dir, report, samples, class_names)
        output.finish()
    return report


def make_report(
    config: RunConfig,
    bank: Bank,
    result: Scores | None,
    class_names: list[str],
    timer: Timer,
    *,
    wall: float,
    eval_info: dict[str, Any],
    masks: dict[str, int],
) -> dict[str, Any]:
    oracle = bool(bank.manifest["components"]["labeler"].get("oracle"))
    report: dict[str, Any] = {
        "oracle": oracle,
        "note": ORACLE_NOTE if oracle else "weakly supervised: the bank saw image-level labels only",
        "config": describe_config(config),
        "bank": {
            "size": len(bank),
            "per_class": bank.counts(),
            "dataset": bank.manifest["dataset"],
            "components": bank.manifest["components"],
        },
        "eval": eval_info,
        "masks": masks,
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()} | {"wall": round(wall, 3)},
        "versions": package_versions(),
    }
    if result is not None:
        report.update(result.as_dict(class_names))
    return report


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", report_markdown(report))


def write_html(out_dir: Path, report: dict[str, Any], samples: Sequence[Sample], class_names: list[str], *,
               predictions: Path | None = None, bank: Bank | None = None) -> None:
    """``report.html`` (``moduseg_core.report_html``) from the report and the prediction PNGs (default:
    ``out_dir/predictions``). A page that cannot be made is a warning, not a failed command: the
    scores are written. With ``bank`` (``--explain``) the page opens each mask's evidence
    (``out_dir/explain.jsonl``) and links the bank's atlas (``atlas.html``, written here)."""
    from moduseg_core.report_html import write_run_html

    try:
        folder = os.path.relpath(predictions, out_dir) if predictions is not None else "predictions"
        from moduseg_core.report_html.evidence import explained_page

        extra = explained_page(out_dir, bank, class_names) if bank is not None else {}
        write_run_html(out_dir, report, samples, class_names, predictions=folder,
                       title="ModuSeg evaluation" if predictions is not None else "ModuSeg run", **extra)
    except Exception as exc:  # noqa: BLE001 (the scores are written; the page is a view of them)
        import sys

        print(f"warning: report.html not written: {type(exc).__name__}: {exc}", file=sys.stderr)


def image_paths(inputs: Sequence[Path]) -> list[Path]:
    """Expand files and folders into image paths (sorted), refusing anything else."""
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise ModusegError(f"input {item} does not exist; pass image files or folders of images")
    if not found:
        raise ModusegError(f"no images found in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def write_evaluation(output: OutputDir, predictions: Path, result: Scores, dataset: Built, samples: Sequence[Sample],
                     class_names: list[str], *, begun: bool = False) -> dict[str, Any]:
    """``moduseg evaluate --out``: report.json (the scores, the split, the predictions folder) and
    report.html (charts and the gallery of ``predictions``) in ``output``'s folder; the report.
    ``begun``: the caller began ``output`` already (its planned files listed), so it is only finished here."""
    earlier = Path(predictions).parent / "report.json"  # a run's folder says whether its bank was an oracle's
    try:
        import json

        oracle = bool(json.loads(earlier.read_text()).get("oracle")) if earlier.is_file() else False
    except (OSError, ValueError):
        oracle = False
    report: dict[str, Any] = {
        "oracle": oracle,
        "predictions": str(predictions),
        "eval": dataset_info(dataset, samples),
        **result.as_dict(class_names),
    }
    out = output.root
    with output:
        if not begun:
            output.begin(["report.json", "report.html"])
        write_json(out / "report.json", report)
        write_html(out, report, samples, class_names, predictions=Path(predictions))
        output.finish()
    return report


def evaluate_dir(
    pred_dir: Path, samples: Sequence[Sample], class_names: list[str], rules: dict[str, Any] | None = None
) -> Scores:
    """Score a folder of ``{id}.png`` predictions against a dataset split's masks (IoU and boundary metrics);
    ``rules``: ``score_rules`` of the run configuration and dataset."""
    evaluation = Accumulator(len(class_names))
    for sample in progress(samples, total=len(samples), desc="evaluate"):
        if sample.mask_path is None:
            raise ModusegError(f"sample {sample.id} has no ground-truth mask; evaluate needs a split with masks")
        gt = read_mask(sample.mask_path, n_classes=len(class_names))
        pred_path = Path(pred_dir) / f"{sample.id}.png"
        if not pred_path.is_file():
            raise ModusegError(f"prediction {pred_path} is missing; predict every image of the split first")
        pred = read_mask(pred_path, expected_hw=gt.shape, against=f"its ground truth {sample.mask_path}")
        evaluation.add(gt, pred)
    return evaluation.scores(**(rules or {}))

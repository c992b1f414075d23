"""The jobs behind the CLI: build a bank, predict, evaluate, run all three, write reports."""

from __future__ import annotations

import inspect
import itertools
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .bank import Bank, build_bank
from .components import Built, Timer, build, describe_config, is_oracle, package_versions, validate
from .config import RUN_KINDS, Choice, RunConfig
from .errors import ModusegError
from .inference import Predictor
from .pipeline import stream_predictions
from .io import IMAGE_SUFFIXES, overlay, read_image, read_mask, write_jpeg, write_json, write_png, write_text
from .method.metrics import Accumulator, Scores
from .progress import progress
from .types import Sample

ORACLE_NOTE = "ORACLE labeler: the bank was built from ground-truth masks (an upper bound, not weak supervision)"


def open_dataset(config: RunConfig, split: str, limit: int | None = None) -> tuple[Built, list[Sample]]:
    choice = Choice(name=config.dataset.name, options={**config.dataset.options, "split": split})
    dataset = build("dataset", choice)
    # slice before listing: a dataset that derives labels from masks reads only the first `limit`
    samples = list(dataset.component if limit is None else itertools.islice(dataset.component, limit))
    if not samples:
        raise ModusegError(f"dataset {config.dataset.name!r} split {split!r} has no samples; check its root and split list")
    return dataset, samples


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


def make_bank(config: RunConfig, timer: Timer | None = None, *, encoder: Built | None = None) -> Bank:
    """Build the bank of ``config``; ``encoder`` replaces the configured one (e.g. a caching wrapper of it)."""
    validate(config, ("labeler", "purifier", "encoder", "aggregator", "index"))
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
        **parts,
    )
    bank.encoder_component = parts["encoder"]
    return bank


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
    return Predictor(bank, build("proposer", config.proposer), encoder, build("aggregator", config.aggregator), config.method)


def predict_samples(
    predictor: Predictor,
    samples: Sequence[Sample],
    out_dir: Path | None,
    *,
    n_classes: int,
    overlays: bool = True,
    desc: str = "predict",
    timer: Timer | None = None,
) -> Accumulator | None:
    """Predict every sample, write PNG masks (+ overlays) when ``out_dir`` is given, and return
    the confusion matrix and boundary counts of the samples with ground truth (None when none has)."""
    evaluation = Accumulator(n_classes)
    bar = progress(range(len(samples)), total=len(samples), desc=desc)
    bar_iter = iter(bar)
    for sample, image, prediction in stream_predictions(predictor, samples):
        if out_dir is not None:
            write_png(out_dir / "predictions" / f"{sample.id}.png", prediction.semantic)
            if overlays:
                write_jpeg(out_dir / "overlays" / f"{sample.id}.jpg", overlay(image, prediction.semantic))
        if sample.mask_path is not None:
            t0 = time.perf_counter()
            gt = read_mask(sample.mask_path, expected_hw=image.shape[:2], n_classes=n_classes)
            evaluation.add(gt, prediction.semantic)
            if timer is not None:
                timer.add("evaluate", time.perf_counter() - t0)
        next(bar_iter, None)
    if hasattr(bar, "close"):
        bar.close()
    return evaluation if evaluation.images else None


def run(config: RunConfig, out_dir: Path, *, bank_dir: Path | None = None) -> dict[str, Any]:
    """Build (or load) the bank, predict the eval split, evaluate, and write the report."""
    validate(config, RUN_KINDS)
    out_dir = Path(out_dir)
    timer = Timer()
    started = time.perf_counter()
    if bank_dir is not None:
        bank = Bank.load(bank_dir, index=config.index)
    else:
        t0 = time.perf_counter()
        bank = make_bank(config, timer)
        bank.save(out_dir / "bank")
        timer.add("bank_total", time.perf_counter() - t0)
    dataset, samples = open_dataset(config, config.eval_split, config.eval_limit)
    class_names = list(dataset.component.class_names)
    if class_names != bank.class_names:
        raise ModusegError(
            f"the bank's classes ({len(bank.class_names)}: {', '.join(bank.class_names[:4])}...) differ from the "
            f"dataset's ({len(class_names)}); evaluate with the dataset the bank was built on"
        )
    predictor = make_predictor(config, bank)
    t0 = time.perf_counter()
    evaluation = predict_samples(
        predictor, samples, out_dir, n_classes=len(class_names), overlays=config.overlays, timer=timer
    )
    timer.add("predict_total", time.perf_counter() - t0)
    for stage, seconds in predictor.timer.seconds.items():
        timer.add(f"predict_{stage}", seconds)
    result = evaluation.scores() if evaluation is not None else None
    report = make_report(
        config,
        bank,
        result,
        class_names,
        timer,
        wall=time.perf_counter() - started,
        eval_info=dataset_info(dataset, samples),
        masks={"proposed": predictor.masks_seen, "kept": predictor.masks_kept, "images": len(samples)},
    )
    write_report(out_dir, report)
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
        "bank": {"size": len(bank), "per_class": bank.counts(), "dataset": bank.manifest["dataset"], "components": bank.manifest["components"]},
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


def report_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = ["# ModuSeg report", ""]
    if report["oracle"]:
        lines += [f"> **{ORACLE_NOTE}.**", ""]
    parts = ", ".join(f"{k}: `{cfg[k]['name']}`" for k in RUN_KINDS)
    lines += [f"Components — {parts}", ""]
    ev = report["eval"]
    lines += [f"Evaluated {ev['images']} images of `{ev['name']}` split `{ev['split']}`; bank of {report['bank']['size']} vectors.", ""]
    if "miou" in report:
        lines += [f"**mIoU: {100 * report['miou']:.2f}**  (pixel accuracy {100 * report['pixel_accuracy']:.2f})", ""]
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
            f"Boundary F-score **{_pct(boundary['f_score'])}** (tolerance {boundary_tolerance_text(boundary['tolerance'])}), "
            f"Boundary IoU **{_pct(boundary['iou'])}** (dilation {boundary['dilation_ratio']:g} of the diagonal)."
        ),
        "",
        "| class | IoU | boundary F | Boundary IoU |",
        "|---|---:|---:|---:|",
    ]
    for name, value in report["per_class_iou"].items():
        rows.append(
            f"| {name} | {_pct(value)} | {_pct(boundary['per_class_f'].get(name))} | {_pct(boundary['per_class_iou'].get(name))} |"
        )
    return rows


def boundary_tolerance_text(tolerance: float) -> str:
    return f"{tolerance:g} px" if tolerance >= 1 else f"{100 * tolerance:g} % of the diagonal"


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


def evaluate_dir(pred_dir: Path, samples: Sequence[Sample], class_names: list[str]) -> Scores:
    """Score a folder of ``{id}.png`` predictions against a dataset split's masks (IoU and boundary metrics)."""
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
    return evaluation.scores()

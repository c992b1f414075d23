"""`moduseg run | build-bank | predict | evaluate | demo | bench`: parse the arguments, call
``runner``, ``predict_files`` and ``bench``, print."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.cli.common import (
    AggregatorOpt,
    ConfigOpt,
    DatasetOpt,
    EncoderOpt,
    ExecutorOpt,
    IndexOpt,
    LabelerOpt,
    OnErrorOpt,
    OutOpt,
    OverwriteOpt,
    ProposerOpt,
    PurifierOpt,
    SetOpt,
    compose,
    exit_code,
)
from moduseg_core.contract.errors import ModusegError

ExplainOpt = Annotated[bool, typer.Option("--explain", help=(
    "Also say why each mask got its label: its bank neighbours (image, class, similarity), the vote tally and "
    "margin, whether NMS kept it, in OUT/explain.jsonl (run: also in report.html, with the bank's atlas.html). "
    "Local executor only."))]


def _print_scores(report: dict, out: Path) -> None:
    if report.get("oracle"):
        typer.secho(
            "NOTE: labeler 'gt' is the ORACLE (ground-truth masks); this mIoU is an upper bound.", fg="yellow", err=True
        )
    if "miou" in report:
        per_class = report["per_class_iou"]
        width = max(len(n) for n in per_class)
        for name, value in per_class.items():
            typer.echo(f"  {name:<{width}}  {'   –' if value is None else f'{100 * value:6.2f}'}")
        skipped = (report.get("skipped") or {}).get("eval", 0)
        scored = report["eval"]["images"] - skipped
        from moduseg_core.method.metrics import miou_note

        typer.echo(f"mIoU {100 * report['miou']:.2f} on {scored} images" + (f" ({skipped} skipped)" if skipped else "")
                   + f" ({miou_note(report)})"
                   + f" (wall {report['seconds']['wall']:.1f} s)")
        if report.get("boundary"):
            typer.echo(f"boundary F {100 * report['boundary']['f_score']:.2f}, "
                       f"Boundary IoU {100 * report['boundary']['iou']:.2f}")
    typer.echo(f"report: {out / 'report.md'}")
    if (out / "report.html").is_file():
        typer.echo(f"page: {out / 'report.html'} (open it in a browser)")


def run(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    labeler: LabelerOpt = None,
    proposer: ProposerOpt = None,
    purifier: PurifierOpt = None,
    encoder: EncoderOpt = None,
    aggregator: AggregatorOpt = None,
    index: IndexOpt = None,
    sets: SetOpt = None,
    bank: Annotated[Path | None, typer.Option("--bank", help="Use this saved bank instead of building one.")] = None,
    out: OutOpt = Path("runs/latest"),
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
    executor: ExecutorOpt = None,
    explain: ExplainOpt = False,
) -> int:
    """Build the bank, predict the eval split and evaluate: the whole method in one go."""
    from moduseg_core.files.outputs import prepare

    output = prepare(out, "run", overwrite=overwrite)
    cfg = compose(config, sets, on_error, executor=executor, dataset=dataset, labeler=labeler, proposer=proposer,
                  purifier=purifier, encoder=encoder, aggregator=aggregator, index=index)
    from moduseg_core.contract.kinds import KINDS
    from moduseg_core.doctor.run import preflight

    if bank is None:  # every component checked before the job: a long job does not die on a missing package
        preflight(cfg, KINDS)
    else:
        preflight(cfg, ("dataset", "proposer", "index"), splits=(cfg.eval_split,))
    from moduseg_core.executors.run_job import (
        run_distributed,  # the bank resumable (OUT/bank/shards/), with either executor
    )

    report = run_distributed(cfg, out, bank_dir=bank, output=output, explain=explain)
    _print_scores(report, out)
    return exit_code(report["skipped"]["bank"] + report["skipped"]["eval"])


def build_bank_cmd(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    labeler: LabelerOpt = None,
    purifier: PurifierOpt = None,
    encoder: EncoderOpt = None,
    aggregator: AggregatorOpt = None,
    index: IndexOpt = None,
    sets: SetOpt = None,
    out: OutOpt = Path("runs/bank"),
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
    executor: ExecutorOpt = None,
    add: Annotated[
        bool,
        typer.Option(
            "--add",
            help=(
                "Add this config's bank split (another split, or another folder: --set dataset.root=...) to the bank "
                "already in --out, without recomputing its images; the far-vector filter is re-applied over the whole "
                "bank."
            ),
        ),
    ] = False,
) -> int:
    """Label, purify, encode and pool the bank split into a saved bank directory.

    Finished images are stored as they come (OUT/shards/, method.batch_images images a shard): a killed
    build rerun with the same command resumes, and ends byte-identical to an uninterrupted one, with
    either executor (docs/scaling.md)."""
    from moduseg_core.executors.bank_job import build_bank_job
    from moduseg_core.files.outputs import prepare

    output = prepare(out, "build-bank", overwrite=overwrite)
    cfg = compose(config, sets, on_error, executor=executor, dataset=dataset, labeler=labeler, purifier=purifier,
                  encoder=encoder, aggregator=aggregator, index=index)
    from moduseg_core.contract.kinds import BANK_KINDS
    from moduseg_core.doctor.run import preflight

    preflight(cfg, ("dataset", *BANK_KINDS), splits=(cfg.bank_split,))
    result, errors, job = build_bank_job(cfg, out, output=output, add=add)
    if result.manifest["components"]["labeler"].get("oracle"):
        typer.secho(
            "NOTE: labeler 'gt' is the ORACLE: this bank was built from ground-truth masks.", fg="yellow", err=True
        )
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items())
    typer.echo(f"bank of {len(result)} vectors ({counts}) -> {out}")
    if add:
        typer.echo(f"added {job['images']} images of split {cfg.bank_split!r}; the bank has {job['sources']} source(s)")
    if cfg.executor == "ray" and job.get("nodes"):
        typer.echo(f"ray: {job['computed']} images computed by {job['workers']} actor(s) on {job['nodes']} node(s)")
    return exit_code(len(errors))


def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    bank: Annotated[
        Path | None, typer.Option("--bank", help="A bank directory from build-bank or run (required).")
    ] = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    index: IndexOpt = None,
    sets: SetOpt = None,
    out: OutOpt = Path("runs/predict"),
    overlays: Annotated[bool, typer.Option(help="Also write overlay JPEGs.")] = True,
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
    executor: ExecutorOpt = None,
    explain: ExplainOpt = False,
) -> int:
    """Segment images with a saved bank: VOC-palette PNG masks (+ overlays) in OUT.

    The encoder and aggregator are the bank's own unless --set overrides them (a
    mismatch is refused)."""
    from moduseg_core.files.outputs import prepare
    from moduseg_core.pipeline.predict_files import predict_files

    if bank is None:
        raise ModusegError("Missing option '--bank': pass the bank folder of a build-bank or run (e.g. runs/x/bank)")
    output = prepare(out, "predict", overwrite=overwrite)
    if os.path.abspath(bank) == os.path.abspath(out):
        raise ModusegError(f"--bank {bank} is the --out folder; write the predictions into another folder")
    cfg = compose(config, sets, on_error, executor=executor, proposer=proposer, index=index)
    named = {kind for kind in ("encoder", "aggregator", "index") if any(s.startswith(f"{kind}.") for s in sets or [])}
    report = predict_files(
        cfg, inputs, bank, out, output=output, overlays=overlays, named=named | ({"index"} if index else set()),
        explain=explain,
    )
    typer.echo(
        f"{report['predicted']} masks -> {out / 'predictions'}"
        + (f", overlays -> {out / 'overlays'}" if overlays else "")
    )
    return exit_code(report["skipped"]["images"])


def evaluate(
    predictions: Annotated[Path, typer.Argument(help="Folder of {id}.png class maps.")],
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    sets: SetOpt = None,
    split: Annotated[str, typer.Option(help="Dataset split with ground truth.")] = "val",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also write report.json and report.html (gallery, charts) here."),
    ] = None,
    overwrite: OverwriteOpt = False,
    executor: ExecutorOpt = None,
) -> None:
    """Score a folder of predicted masks against a dataset split (mIoU, boundary F, Boundary IoU; per class)."""
    from moduseg_core.files.outputs import check_complete, prepare
    from moduseg_core.method.metrics import miou_note
    from moduseg_core.pipeline.runner import (
        boundary_tolerance_text,
        evaluate_dir,
        open_dataset,
        score_rules,
        write_evaluation,
    )

    cfg = compose(config, sets, executor=executor, dataset=dataset)
    if not predictions.is_dir():
        raise ModusegError(f"predictions folder {predictions} does not exist; pass the predictions/ folder of a run")
    for folder in (predictions, predictions.parent):
        check_complete(folder, "the output")
    output = prepare(out, "evaluate", overwrite=overwrite)
    ds, samples = open_dataset(cfg, split, cfg.eval_limit)
    names = list(ds.component.class_names)
    if cfg.executor == "local":
        result = evaluate_dir(predictions, samples, names, score_rules(cfg, ds.component))
        if output is not None:
            write_evaluation(output, predictions, result, ds, samples, names)
    else:  # with --out, the finished chunks' counts are kept in OUT/chunks/: a rerun resumes
        from moduseg_core.executors import make_executor
        from moduseg_core.executors.ray_predict import evaluate_on_ray

        make_executor(cfg)
        if output is None:
            result = evaluate_on_ray(cfg, predictions, samples, len(names)).scores(**score_rules(cfg, ds.component))
        else:
            with output:
                output.begin(["report.json", "report.html", "chunks/"])
                totals = evaluate_on_ray(cfg, predictions, samples, len(names), state=output.root / "chunks")
                result = totals.scores(**score_rules(cfg, ds.component))
                write_evaluation(output, predictions, result, ds, samples, names, begun=True)
    def cell(value: float) -> str:
        return "     –" if value != value else f"{100 * value:6.2f}"

    bound = result.boundary
    assert bound is not None  # evaluate_dir always scores the boundaries
    typer.echo(f"  {'class':<14} {'IoU':>6} {'BF':>6} {'BIoU':>6}")
    for c, name in enumerate(names):
        typer.echo(f"  {name:<14} {cell(result.iou[c])} {cell(bound.f_score[c])} {cell(bound.iou[c])}")
    typer.echo(f"mIoU {100 * result.miou:.2f} on {len(samples)} images ({miou_note(result.as_dict(names))})")
    typer.echo(f"boundary F {100 * bound.mean_f:.2f} (tolerance {boundary_tolerance_text(bound.tolerance)}), "
               f"Boundary IoU {100 * bound.mean_iou:.2f}")
    if out is not None:
        typer.echo(f"report: {out / 'report.json'}; page: {out / 'report.html'} (open it in a browser)")


def demo(
    data: Annotated[
        Path | None, typer.Option("--data", help="coco-mini folder (default: ../shared/data/coco-mini).")
    ] = None,
    out: OutOpt = Path("runs/demo"),
    sets: SetOpt = None,
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
) -> int:
    """The embedded offline default on coco-mini: SLIC + offline DINOv2-S/14 + the gt ORACLE labeler."""
    from moduseg_core.contract.config import coco_mini_preset
    from moduseg_core.files.outputs import prepare
    from moduseg_core.pipeline.runner import run as run_job

    output = prepare(out, "demo", overwrite=overwrite)
    preset, sets = coco_mini_preset(data, sets, "pass --data PATH or set DATA=PATH for make demo")
    cfg = compose(preset, sets, on_error)
    report = run_job(cfg, out, output=output)
    _print_scores(report, out)
    typer.echo(f"overlays: {out / 'overlays'}")
    return exit_code(report["skipped"]["bank"] + report["skipped"]["eval"])


def bench(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="coco-mini folder, for the default config (default: ../shared/data/coco-mini)."),
    ] = None,
    config: ConfigOpt = None,
    proposer: ProposerOpt = None,
    encoder: EncoderOpt = None,
    aggregator: AggregatorOpt = None,
    index: IndexOpt = None,
    sets: SetOpt = None,
    images: Annotated[int, typer.Option("--images", min=1, help="Timed images (the first of the eval split).")] = 8,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Images run first and not timed.")] = 1,
    bank_size: Annotated[
        int, typer.Option("--bank-size", min=1, help="Synthetic bank vectors (VOC train_aug gives ~30k).")
    ] = 30_000,
    batch: Annotated[
        int | None,
        typer.Option("--batch", min=1, help="Images per encoder batch in (b) (default: method.batch_images)."),
    ] = None,
    floor_batch: Annotated[
        int, typer.Option("--floor-batch", min=1, help="Batch of the encoder FLOP-floor measurement.")
    ] = 16,
    bank_images: Annotated[
        int,
        typer.Option(
            "--bank-images",
            min=0,
            help="Also time bank building on this many bank images and project it to VOC train_aug (0 = skip).",
        ),
    ] = 0,
    loop: Annotated[
        bool, typer.Option("--loop/--no-loop", help="Also run (a), the released code's per-image, per-mask loop.")
    ] = True,
    max_masks: Annotated[
        int | None,
        typer.Option(
            "--max-masks",
            min=1,
            help=(
                "Keep at most N best-scoring masks per image on both sides (random weights can return far more than "
                "trained ones)."
            ),
        ),
    ] = None,
    engines: Annotated[
        str,
        typer.Option(
            "--engines",
            help=(
                "Proposal stage of proposer sam/sam2 split into encoder / decoder / post-processing s/img per engine, "
                "on the "
                "same model and images, interleaved, with fast/library ratios and whether masks and scores agree. "
                "auto = library,fast for sam/sam2, nothing for other proposers; none = skip; "
                "or library,fast / library / fast."
            ),
        ),
    ] = "auto",
    out: OutOpt = Path("runs/bench"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Released-code loop vs ModuSeg pipeline on the same images and components: images/s per stage, ratio, FLOP floor;
    for sam/sam2 the proposal stage split per engine (--engines)."""
    from moduseg_core.bench import bench_markdown, parse_engines, run_bench
    from moduseg_core.contract.config import coco_mini_preset
    from moduseg_core.files.io import write_json, write_text
    from moduseg_core.files.outputs import prepare

    output = prepare(out, "bench", overwrite=overwrite)
    if config is None:
        config, sets = coco_mini_preset(data, sets, "pass --data PATH or --config FILE")
    cfg = compose(config, sets, proposer=proposer, encoder=encoder, aggregator=aggregator, index=index)
    split_engines = parse_engines(engines, cfg.proposer.name)
    report = run_bench(cfg, images=images, bank_size=bank_size, batch=batch, warmup=warmup, loop=loop,
                       bank_images=bank_images, floor_batch=floor_batch, max_masks=max_masks,
                       engines=split_engines, out=None)
    assert output is not None and out is not None  # bench always writes a folder (its --out has a default)
    with output:
        output.begin(["bench.json", "bench.md"])
        write_json(out / "bench.json", report)
        write_text(out / "bench.md", bench_markdown(report))
        output.finish()
    typer.echo(bench_markdown(report))
    typer.echo(f"report: {out / 'bench.md'}, {out / 'bench.json'}")

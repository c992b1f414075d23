"""``moduseg run``: the bank through the shard store (``OUT/bank/shards/``: a killed run resumes it,
with either executor), then the eval split predicted here (``--executor local``, ``runner.predict_samples``)
or by Ray workers (each writing its images' PNGs and overlays, the scores summed from their integer
counts, finished chunks recorded in ``OUT/chunks/``): the same report and predictions as ``runner.run``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from moduseg_core.contract.components import Timer, validate
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.kinds import RUN_KINDS
from moduseg_core.executors.keys import CHUNKS, prediction_key
from moduseg_core.files.failures import ERRORS_FILE, ErrorLog
from moduseg_core.files.faults import crash_point
from moduseg_core.pipeline.bank import Bank


def run_distributed(config: RunConfig, out_dir: Path, *, bank_dir: Path | None = None, output: Any,
                    explain: bool = False) -> dict[str, Any]:
    """``runner.run`` with the per-image work on ``config.executor``, its bank resumable. With ``explain``,
    each mask's evidence goes to ``explain.jsonl`` and into report.html, and the bank's atlas to ``atlas.html``."""
    from moduseg_core.executors import make_executor
    from moduseg_core.executors.bank_job import build_into, open_bank_job
    from moduseg_core.pipeline.runner import (
        dataset_info,
        make_report,
        open_dataset,
        run_outputs,
        score_rules,
        write_html,
        write_report,
    )

    validate(config, RUN_KINDS)
    if explain and config.executor != "local":
        raise ModusegError(f"--explain needs --executor local (the evidence is gathered in this process), not "
                           f"{config.executor!r}; leave out --executor {config.executor} or --explain")
    out_dir = Path(out_dir)
    if bank_dir is not None:
        if os.path.abspath(bank_dir) == os.path.abspath(out_dir):
            raise ModusegError(f"--bank {bank_dir} is the --out folder; write the run into another folder")
        output.protect(bank_dir)
    errors = ErrorLog(config.on_error)
    timer = Timer()
    started = time.perf_counter()
    dataset, samples = open_dataset(config, config.eval_split, config.eval_limit)
    class_names = list(dataset.component.class_names)
    job = open_bank_job(config) if bank_dir is None else None
    executor = make_executor(config)
    with output:
        chunks = [f"{CHUNKS}/"] if config.executor == "ray" else []
        output.begin([*run_outputs(samples, overlays=config.overlays, bank=bank_dir is None, explain=explain), *chunks])
        errors.open(out_dir)
        errors.context = {"split": config.bank_split}
        if bank_dir is None:
            assert job is not None  # opened above whenever the run builds its bank
            t0 = time.perf_counter()
            bank, _ = build_into(config, out_dir / "bank", job, executor=executor, errors=errors, timer=timer)
            timer.add("bank_total", time.perf_counter() - t0)
            bank_dir = out_dir / "bank"
        else:
            bank = Bank.load(bank_dir, index=config.index)
        bank_errors = len(errors)
        if class_names != bank.class_names:
            raise ModusegError(
                f"the bank's classes ({len(bank.class_names)}: {', '.join(bank.class_names[:4])}...) differ from the "
                f"dataset's ({len(class_names)}); evaluate with the dataset the bank was built on"
            )
        bank.check_encoder(config.encoder, config.aggregator)
        errors.context = {"split": config.eval_split}
        t0 = time.perf_counter()
        if config.executor == "local":
            evaluation, masks = _predict_here(config, bank, getattr(executor, "parts", None), samples, out_dir,
                                              class_names, errors=errors, timer=timer, explain=explain)
        else:
            from moduseg_core.executors.ray_predict import predict_on_ray

            evaluation, masks = predict_on_ray(config, bank_dir, samples, out_dir, n_classes=len(class_names),
                                               overlays=config.overlays, errors=errors, class_names=class_names,
                                               index=config.index, state=out_dir / CHUNKS,
                                               key=prediction_key(config, Path(bank_dir), samples))
        timer.add("predict_total", time.perf_counter() - t0)
        errors.check_some_succeeded(len(samples), since=bank_errors)
        skipped = {"bank": bank_errors, "eval": len(errors) - bank_errors}
        report = make_report(
            config,
            bank,
            evaluation.scores(**score_rules(config, dataset.component)) if evaluation is not None else None,
            class_names,
            timer,
            wall=time.perf_counter() - started,
            eval_info=dataset_info(dataset, samples),
            masks=masks | {"images": len(samples) - skipped["eval"]},
        )
        report["skipped"] = skipped | ({"log": ERRORS_FILE} if any(skipped.values()) else {})
        crash_point("report")
        write_report(out_dir, report)
        write_html(out_dir, report, samples, class_names, bank=bank if explain else None)
        output.finish()
    return report


def _predict_here(config: RunConfig, bank: Bank, parts: dict | None, samples: list, out_dir: Path,
                  class_names: list[str], *, errors: ErrorLog, timer: Timer,
                  explain: bool = False) -> tuple[Any, dict[str, int]]:
    """The eval split predicted in this process (``runner.run``'s path); the encoder the bank was just
    built with is reused (``parts``: the local executor's components, None when every image was resumed)."""
    from moduseg_core.pipeline.runner import make_predictor, predict_samples

    if parts is not None:
        bank.encoder_component = parts["encoder"]
    predictor = make_predictor(config, bank)
    log = None
    if explain:
        from moduseg_core.pipeline.evidence import ExplainLog

        predictor.explain, log = True, ExplainLog(bank, class_names)
        if bank.traced() is None:
            from moduseg_core.files.progress import note
            from moduseg_core.pipeline.provenance import NO_PROVENANCE

            note(f"the bank has {NO_PROVENANCE} (explain.jsonl and report.html name its neighbours' rows and classes)")
    evaluation = predict_samples(predictor, samples, out_dir, n_classes=len(class_names), overlays=config.overlays,
                                 timer=timer, errors=errors, class_names=class_names, explain=log)
    if log is not None:
        log.write(out_dir)
    for stage, seconds in predictor.timer.seconds.items():
        timer.add(f"predict_{stage}", seconds)
    return evaluation, {"proposed": predictor.masks_seen, "kept": predictor.masks_kept}

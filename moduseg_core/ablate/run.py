"""Running a sweep: every point is a full run (bank + predict + evaluate) through the stage cache.

The stages are the pipeline's own (``runner.bank_from_config``, ``inference.Predictor``,
``runner.predict_samples``); the cache sits at their boundaries (``moduseg_core.cache``):

- ``scores``: a point whose predictions and evaluation settings were scored before is read back
  whole — a finished sweep reruns in seconds and loads no model, bank or image;
- ``predictions``: per image, keyed by the bank and every inference setting;
- ``banks``: keyed by the dataset split and the bank-side components and numbers;
- ``pooled`` / ``features`` / ``proposals``: per image, so a point that changes only
  ``method.top_k`` reruns retrieval, voting and NMS only, and the encoder runs once per image
  and encoder configuration in the whole sweep.

A killed sweep resumes: entries are written atomically as they are computed, and the
results files are rewritten after every point. With ``executor="ray"`` the points run as Ray tasks
over the same cache (``ray_sweep``); claims (``cache.claims``) keep two workers off one entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moduseg_core.ablate.point import (
    METRICS_VERSION,
    PointKeys,
    Split,
    bank_summary,
    delta,
    files_digest,
    is_oracle,
    point_fields,
    point_keys,
    write_point,
)
from moduseg_core.ablate.sweep import Point, Sweep, expand
from moduseg_core.cache import (
    CachedEncoder,
    CachedProposer,
    CachingPredictor,
    StageCache,
    cached_built,
    component_key,
    fingerprint,
)
from moduseg_core.cache.claims import claimed
from moduseg_core.contract.components import Built, Timer, build, describe_config, package_versions
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.failures import ERRORS_FILE, ErrorLog
from moduseg_core.files.faults import crash_point
from moduseg_core.files.outputs import OutputDir
from moduseg_core.files.progress import note
from moduseg_core.pipeline.bank import Bank
from moduseg_core.pipeline.runner import (
    ORACLE_NOTE,
    bank_from_config,
    dataset_info,
    open_dataset,
    predict_samples,
    score_rules,
)

__all__ = ["METRICS_VERSION", "SweepRun", "files_digest", "run_sweep"]


@dataclass
class SweepRun:
    """Runs the points of a sweep, sharing one encoder model and proposer per configuration."""

    sweep: Sweep
    out_dir: Path
    cache: StageCache | None
    on_point: Callable[[dict[str, Any]], None] | None = None
    output: OutputDir | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    errors: ErrorLog = field(default_factory=lambda: ErrorLog("fail"))
    #: banks built with skipped images (never cached): bank key → (bank, skipped image ids)
    _skipped_banks: dict[str, tuple[Bank, list[str]]] = field(default_factory=dict)
    _encoders: dict[str, CachedEncoder] = field(default_factory=dict)
    _proposers: dict[str, CachedProposer] = field(default_factory=dict)
    _splits: dict[str, Split] = field(default_factory=dict)

    def run(self, points: list[Point] | None = None, *, executor: str = "local") -> list[dict[str, Any]]:
        """Run ``points`` (default: the sweep's) here or, with ``executor="ray"``, as Ray tasks over the
        shared cache (``ray_sweep``); the tables are rewritten after every finished point, in point order."""
        from moduseg_core.ablate.results import PLOTS, write_results

        points = expand(self.sweep) if points is None else points
        for point in points:  # every dataset split opens (roots, split lists, labels) before any work
            self._split(point.config, point.config.bank_split, point.config.bank_limit)
            self._split(point.config, point.config.eval_split, point.config.eval_limit)
        self.errors = ErrorLog(self.sweep.base.on_error)
        output = self.output or OutputDir(self.out_dir, "ablate")
        planned = [
            "results.csv",
            "results.json",
            "results.md",
            "report.html",
            ERRORS_FILE,
            *(f"plots/{name}" for name in PLOTS),
        ]
        planned += [f"points/{point.slug}/" for point in points]
        if resumed := self.scored(points):
            note(f"resuming: {resumed} of {len(points)} points already scored (read back from the stage cache)")
        run_elsewhere = None
        if executor == "ray":
            from moduseg_core.ablate.ray_sweep import RaySweep

            run_elsewhere = RaySweep(self)  # connects to the cluster before anything is written
        with output:
            output.begin(planned)
            self.errors.open(self.out_dir)
            started = time.perf_counter()

            def record(report: dict[str, Any]) -> None:
                self.reports.append(report)
                self.reports.sort(key=lambda r: r["point"])
                # tables after every point (a killed sweep leaves what it finished); plots at the end
                last = len(self.reports) == len(points)
                write_results(
                    self.out_dir, self.sweep, self.reports, self.summary(time.perf_counter() - started), plots=last
                )
                if last:
                    self.write_html(points[0])
                crash_point("ablate-point")
                if self.on_point is not None:
                    self.on_point(report)

            if run_elsewhere is not None:
                run_elsewhere.run(points, record)
            else:
                for point in points:
                    before = len(self.errors)
                    self.errors.context = {"point": point.index}
                    report = self.run_point(point, total=len(points))
                    report["skipped"] = len(self.errors) - before
                    record(report)
            output.finish()
        return self.reports

    def write_html(self, point: Point) -> None:
        """``report.html``: the results table, the plots and the same eval images across the points
        (their ``points/SLUG/predictions``). A page that cannot be made is a warning only."""
        from moduseg_core.report_html import write_sweep_html

        try:
            split = self._split(point.config, point.config.eval_split, point.config.eval_limit)
            write_sweep_html(self.out_dir, self.reports, split.samples, list(split.dataset.component.class_names))
        except Exception as exc:  # noqa: BLE001 (results.* are written; the page is a view of them)
            import sys

            print(f"warning: report.html not written: {type(exc).__name__}: {exc}", file=sys.stderr)

    # -- bookkeeping ------------------------------------------------------------------------------

    def encoder_passes(self) -> int:
        return sum(e.passes for e in self._encoders.values())

    def summary(self, wall: float) -> dict[str, Any]:
        from moduseg_core.ablate.results import sweep_summary

        return sweep_summary(self.sweep, self.reports, self.cache, wall)

    # -- one point ---------------------------------------------------------------------------------

    def _split(self, config: RunConfig, split: str, limit: int | None) -> Split:
        key = fingerprint({"dataset": config.dataset.model_dump(mode="json"), "split": split, "limit": limit})
        if key not in self._splits:
            dataset, samples = open_dataset(config, split, limit)
            info = dataset_info(dataset, samples) | {"files": files_digest(samples)}
            self._splits[key] = Split(dataset, samples, info)
        return self._splits[key]

    def _encoder(self, config: RunConfig) -> Built:
        assert self.cache is not None
        key = fingerprint(component_key("encoder", config.encoder))
        if key not in self._encoders:
            choice = config.encoder
            self._encoders[key] = CachedEncoder(self.cache, choice, lambda: build("encoder", choice).component)
        return cached_built("encoder", config.encoder, self._encoders[key])

    def _proposer(self, config: RunConfig) -> Built:
        assert self.cache is not None
        key = fingerprint(component_key("proposer", config.proposer))
        if key not in self._proposers:
            choice = config.proposer
            self._proposers[key] = CachedProposer(self.cache, choice, lambda: build("proposer", choice).component)
        return cached_built("proposer", config.proposer, self._proposers[key])

    def point_dir(self, point: Point) -> Path:
        return self.out_dir / "points" / point.slug

    def run_point(self, point: Point, *, total: int = 0) -> dict[str, Any]:
        if self.cache is None:
            return self._run_uncached(point)
        return self._run_cached(point, total)

    def _run_uncached(self, point: Point) -> dict[str, Any]:
        """The plain pipeline (``runner.run``): what running the points one by one costs."""
        from moduseg_core.pipeline.runner import run as run_job

        config = point.config.model_copy(update={"overlays": False})
        out = self.point_dir(point)
        report = run_job(config, out, errors=self.errors)
        bank = self._split(config, config.bank_split, config.bank_limit)
        evals = self._split(config, config.eval_split, config.eval_limit)
        report |= point_fields(point) | {
            "encoder": {
                "passes": len(bank.samples) + len(evals.samples),
                "uncached_passes": len(bank.samples) + len(evals.samples),
            },
        }
        write_point(out, report)
        return report

    def point_keys(self, point: Point) -> PointKeys:
        assert self.cache is not None
        config = point.config
        bank_split = self._split(config, config.bank_split, config.bank_limit)
        eval_split = self._split(config, config.eval_split, config.eval_limit)
        return point_keys(self.cache, config, bank_split, eval_split)

    def is_scored(self, point: Point) -> bool:
        """Whether the point's scores are in the cache already (a rerun reads them back)."""
        return self.cache is not None and self.cache.path("scores", self.point_keys(point).scores).exists()

    def scored(self, points: Sequence[Point]) -> int:
        return sum(self.is_scored(point) for point in points)

    def _run_cached(self, point: Point, total: int) -> dict[str, Any]:
        cache = self.cache
        assert cache is not None
        started = time.perf_counter()
        hits0, misses0 = cache.hits.copy(), cache.misses.copy()
        keys = self.point_keys(point)
        stored = cache.get("scores", keys.scores)
        if stored is None:  # claimed while it is computed: a worker scoring the same point meanwhile is waited for
            waiting = f"point {point.index}: waiting for another worker scoring it"
            with claimed(cache.path("scores", keys.scores), on_wait=lambda: note(waiting)) as stored:
                if stored is None:
                    return self._compute_point(point, total, keys, started, hits0, misses0)
                cache.written_meanwhile("scores")
        import json

        report = json.loads(stored.read_text())
        report["config"] = describe_config(point.config)  # runtime options may differ from the first run's
        report["first_seconds"] = report.get("seconds", {})
        report["seconds"] = {"wall": round(time.perf_counter() - started, 3)}
        report["encoder"] = dict(report.get("encoder", {}), passes=0)
        report |= point_fields(point) | {"cache": delta(cache, hits0, misses0), "scores_cached": True,
                                         "keys": {"bank": keys.bank, "scores": keys.scores}}
        write_point(self.point_dir(point), report)
        return report

    def _compute_point(self, point: Point, total: int, keys: PointKeys, started: float, hits0,
                       misses0) -> dict[str, Any]:
        cache = self.cache
        assert cache is not None
        config = point.config
        passes0 = self.encoder_passes()
        timer = Timer()
        bank_split = self._split(config, config.bank_split, config.bank_limit)
        eval_split = self._split(config, config.eval_split, config.eval_limit)
        class_names = list(eval_split.dataset.component.class_names)
        bank_key, prediction_base = keys.bank, keys.prediction_base
        encoder = self._encoder(config)
        proposer = self._proposer(config)
        loaded: list[Bank] = []

        def build_bank() -> Bank:
            t0 = time.perf_counter()
            waiting = f"point {point.index}: waiting for another worker building its bank"
            with claimed(cache.path("banks", bank_key), on_wait=lambda: note(waiting)) as ready:
                if ready is not None:  # built by another worker while this one waited
                    cache.written_meanwhile("banks")
                    bank = Bank.load(ready, index=config.index)
                    timer.add("bank_load", time.perf_counter() - t0)
                    return bank
                skipped_before = len(self.errors)
                bank = bank_from_config(config, timer, encoder=encoder, errors=self.errors)
                if len(self.errors) > skipped_before:  # not cached: a later sweep retries the skipped images
                    ids = sorted(r["image"] for r in self.errors.records[skipped_before:])
                    self._skipped_banks[bank_key] = (bank, ids)
                else:
                    with cache.put("banks", bank_key) as tmp:  # the entry appears whole or not at all
                        bank.save(tmp)
            timer.add("bank_build", time.perf_counter() - t0)
            return bank

        def load_bank() -> Bank:
            if loaded:
                return loaded[0]
            t0 = time.perf_counter()
            hit = cache.get("banks", bank_key) if bank_key not in self._skipped_banks else None
            if bank_key in self._skipped_banks:
                bank = self._skipped_banks[bank_key][0]
            elif hit is not None:
                bank = Bank.load(hit, index=config.index)
                timer.add("bank_load", time.perf_counter() - t0)
            else:
                bank = build_bank()
            loaded.append(bank)
            bank.check_encoder(config.encoder, config.aggregator)
            if class_names != bank.class_names:
                raise ModusegError(
                    f"point {point.index}: the bank's classes ({len(bank.class_names)}) differ from the eval dataset's "
                    f"({len(class_names)}); use one dataset for bank_split and eval_split"
                )
            return bank

        if self.errors.skip and bank_key not in self._skipped_banks and not cache.path("banks", bank_key).exists():
            load_bank()  # built now: whether it skips images decides the predictions' keys
        if bank_key in self._skipped_banks:  # predictions of a bank without some images are another entry
            prediction_base = {**prediction_base, "bank_skipped": self._skipped_banks[bank_key][1]}
        predictor = CachingPredictor(
            load_bank, proposer, encoder, build("aggregator", config.aggregator), config.method,
            cache=cache, pooled_base=keys.pooled_base, prediction_base=prediction_base,
        )
        t0 = time.perf_counter()
        errors_before = len(self.errors)
        evaluation = predict_samples(  # the class maps stay in the point's folder (report.html compares them)
            predictor, eval_split.samples, self.point_dir(point),
            n_classes=len(class_names), overlays=False,
            desc=f"point {point.index + 1}/{total or '?'}", timer=timer, errors=self.errors,
        )
        self.errors.check_some_succeeded(len(eval_split.samples), since=errors_before)
        skipped_any = len(self.errors) > errors_before or bank_key in self._skipped_banks
        timer.add("predict_total", time.perf_counter() - t0)
        for stage, seconds in predictor.timer.seconds.items():
            timer.add(f"predict_{stage}", seconds)
        if evaluation is None:
            raise ModusegError(
                f"point {point.index}: split {config.eval_split!r} has no ground-truth masks, so nothing can be "
                "scored; "
                "set eval_split to a split with masks"
            )
        result = evaluation.scores(**score_rules(config, eval_split.dataset.component))
        bank_info = bank_summary(cache, bank_key, predictor)
        oracle = bool(bank_info.get("components", {}).get("labeler", {}).get("oracle")) or is_oracle(config)
        report: dict[str, Any] = {
            "oracle": oracle,
            "note": ORACLE_NOTE if oracle else "weakly supervised: the bank saw image-level labels only",
            "config": describe_config(config),
            "bank": bank_info,
            "eval": {k: v for k, v in eval_split.info.items() if k != "files"},
            "masks": {
                "proposed": predictor.masks_seen,
                "kept": predictor.masks_kept,
                "images": len(eval_split.samples),
            },
            "seconds": {k: round(v, 3) for k, v in timer.seconds.items()}
            | {"wall": round(time.perf_counter() - started, 3)},
            "versions": package_versions(),
            "encoder": {
                "passes": self.encoder_passes() - passes0,
                "uncached_passes": len(bank_split.samples) + len(eval_split.samples),
            },
            "computed": dict(predictor.computed),
        }
        report.update(result.as_dict(class_names))
        if not skipped_any:  # scores with skipped images are not kept: a rerun retries those images
            with cache.put("scores", keys.scores) as tmp:
                import json

                tmp.write_text(json.dumps(report, indent=1) + "\n")
        report |= point_fields(point) | {"cache": delta(cache, hits0, misses0), "scores_cached": False,
                                         "keys": {"bank": bank_key, "scores": keys.scores}}
        write_point(self.point_dir(point), report)
        return report


def run_sweep(
    sweep: Sweep,
    out_dir: Path,
    *,
    cache: StageCache | None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    output: OutputDir | None = None,
    executor: str = "local",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Validate every point, then run them in order; returns the point reports and the summary.
    ``out_dir`` follows the output-folder rules (``output``: the caller's checked ``OutputDir``)."""
    points = expand(sweep)
    started = time.perf_counter()
    runner = SweepRun(sweep, Path(out_dir), cache, on_point=on_point, output=output)
    reports = runner.run(points, executor=executor)
    return reports, runner.summary(time.perf_counter() - started)

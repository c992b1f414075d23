"""``moduseg ablate --executor ray`` (heavy: imports ray): the sweep's points run on a Ray cluster.

The driver (``SweepRun.run``) validates every point, reads back the points already scored in the
stage cache, and hands the rest to a pool of ``ray.actors`` actors (Ray Data ``map_batches``, one
point a task); each actor is a ``SweepRun`` of its own over the same cache folder (storage every
node sees), so a point runs exactly the code of a local sweep. Two actors never compute one cache
entry at once (``cache.claims``): the second waits for the first's entry and reads it. The driver
collects each point's report as it finishes and rewrites the tables in point order, so the results
are the local sweep's; a killed sweep's rerun reads back its finished points and entries.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.ablate.sweep import Point, Sweep
from moduseg_core.files.failures import ErrorLog
from moduseg_core.files.io import notify_written
from moduseg_core.files.progress import Bar


class SweepActor:
    """One Ray actor: a ``SweepRun`` over the shared cache (its models are loaded once and kept for
    the points it runs), one point per call; the report and the point's skipped images go back."""

    def __init__(self, runner_class: type, sweep: Sweep, out_dir: str, cache_root: str | None, cwd: str):
        # runner_class is the driver's SweepRun, passed in (Ray pickles it by reference) so that this module
        # needs no import of ablate.run, which imports this one
        from moduseg_core.ablate.sweep import expand
        from moduseg_core.cache import StageCache

        if os.path.isdir(cwd):  # relative paths of the sweep (dataset roots) resolve as in the driver
            os.chdir(cwd)
        self.runner = runner_class(sweep, Path(out_dir), StageCache(cache_root) if cache_root else None)
        self.runner.errors = ErrorLog(sweep.base.on_error)  # records only: the driver writes errors.jsonl
        self.points = {point.index: point for point in expand(sweep)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from moduseg_core.executors.ray_bank import _pickled

        rows: dict[str, list] = {"point": [], "report": [], "errors": [], "failure": []}
        for index in batch["point"]:
            point = self.points[int(index)]
            errors = self.runner.errors
            before = len(errors)
            errors.context = {"point": point.index}
            report, failure = None, b""
            try:
                report = self.runner.run_point(point, total=len(self.points))
                report["skipped"] = len(errors) - before
            except Exception as exc:  # noqa: BLE001 (raised again in the driver, as a local sweep would)
                failure = _pickled(exc)
            rows["point"].append(point.index)
            rows["report"].append(pickle.dumps(report))
            rows["errors"].append(pickle.dumps(errors.records[before:]))
            rows["failure"].append(failure)
        return {"point": np.asarray(rows["point"], np.int64),
                **{k: np.asarray(v, dtype=object) for k, v in rows.items() if k != "point"}}


class RaySweep:
    """Runs a ``SweepRun``'s points on Ray; made (and connected to the cluster) before any output."""

    def __init__(self, runner: Any):
        from moduseg_core.executors.ray_cluster import connect

        self.runner = runner
        connect(runner.sweep.base.ray)

    def run(self, points: Sequence[Point], record: Callable[[dict[str, Any]], None]) -> None:
        """Every point's report passed to ``record`` as it finishes: the scored ones read back here
        (no model, bank or image is loaded for them), the others computed by the actors."""
        import ray
        from ray.data import ActorPoolStrategy

        from moduseg_core.executors.ray_bank import local_threads
        from moduseg_core.executors.ray_cluster import worker_env

        runner = self.runner
        cache = runner.cache
        scored = {p.index for p in points if runner.is_scored(p)}
        with Bar(len(points), "points") as bar:
            for point in points:
                if point.index in scored:
                    record(self._here(point, len(points)))
                    bar.update()
            rest = [p.index for p in points if p.index not in scored]
            if not rest:
                return
            settings = runner.sweep.base.ray
            dataset = ray.data.from_items([{"point": i} for i in rest], override_num_blocks=len(rest))
            results = dataset.map_batches(
                SweepActor,
                fn_constructor_kwargs={
                    "runner_class": type(runner),
                    "sweep": runner.sweep,
                    "out_dir": os.path.abspath(runner.out_dir),
                    "cache_root": os.path.abspath(cache.root) if cache is not None else None,
                    "cwd": os.getcwd(),
                },
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=min(settings.actors, len(rest)), max_tasks_in_flight_per_actor=1),
                num_cpus=settings.num_cpus,
                num_gpus=settings.num_gpus,
                runtime_env=worker_env(settings.threads or local_threads()),
            )
            for row in results.iter_rows():
                if row["failure"]:
                    raise pickle.loads(row["failure"])
                runner.errors.extend(pickle.loads(row["errors"]))
                report = pickle.loads(row["report"])
                notify_written(runner.out_dir / "points" / report["slug"])  # the worker wrote it: ours to keep
                record(report)
                bar.update()

    def _here(self, point: Point, total: int) -> dict[str, Any]:
        errors = self.runner.errors
        before = len(errors)
        errors.context = {"point": point.index}
        report = self.runner.run_point(point, total=total)
        report["skipped"] = len(errors) - before
        return report

"""Prediction and evaluation on Ray (heavy: imports ray).

``predict_on_ray``: Ray Data ``map_batches`` over the split's chunks (``method.batch_images``
consecutive images, the batches of the local run) with a pool of actors, each loading the bank
from shared storage and building the proposer, encoder and aggregator once. Workers write each
image's PNG (and overlay) themselves and return, per chunk, the confusion matrix and boundary
counts of its images (integers): the driver adds them up into the local run's scores exactly.

``evaluate_on_ray``: the same sums for a folder of predictions, one Ray task per chunk.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.types import Sample
from moduseg_core.executors.ray_bank import _pickled, local_threads
from moduseg_core.executors.ray_cluster import absolute, worker_env
from moduseg_core.files.failures import ErrorLog, Failure
from moduseg_core.files.io import notify_written
from moduseg_core.files.progress import Bar
from moduseg_core.method.metrics import Accumulator
from moduseg_core.pipeline.bank_build import chunks


class PredictActor:
    """One Ray actor: the bank and the inference components loaded once, then one chunk per call."""

    def __init__(self, config: dict, bank: str, samples: list[Sample], out: str | None, n_classes: int, overlays: bool,
                 class_names: list[str] | None, index: dict | None, state: str | None = None):
        from moduseg_core.contract.config import Choice
        from moduseg_core.pipeline.bank import Bank
        from moduseg_core.pipeline.runner import make_predictor

        cfg = RunConfig.model_validate(config)
        self.predictor = make_predictor(cfg, Bank.load(bank, index=Choice(**index) if index else None))
        self.samples, self.out, self.n_classes = samples, Path(out) if out else None, n_classes
        self.overlays, self.class_names = overlays, class_names
        self.state = Path(state) if state else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from moduseg_core.files.faults import crash_point
        from moduseg_core.files.io import overlay, read_mask, write_jpeg, write_json, write_png
        from moduseg_core.files.legend import with_legend
        from moduseg_core.pipeline.streaming import stream_predictions

        rows: dict[str, list] = {"chunk": [], "matrix": [], "boundary": [], "scored": [], "failures": [], "masks": []}
        for index, start, stop in zip(batch["chunk"], batch["start"], batch["stop"], strict=True):
            accumulator = Accumulator(self.n_classes)
            failures: list[tuple[int, str, bytes]] = []
            seen, kept = self.predictor.masks_seen, self.predictor.masks_kept
            chunk = self.samples[int(start):int(stop)]
            position = {id(s): int(start) + k for k, s in enumerate(chunk)}
            for sample, image, prediction in stream_predictions(self.predictor, chunk, workers=0, overlap=False,
                                                                skip_errors=True):
                pos = position[id(sample)]
                if isinstance(prediction, Failure):
                    failures.append((pos, prediction.stage, _pickled(prediction.error)))
                    continue
                gt = None
                if sample.mask_path is not None:
                    try:
                        gt = read_mask(sample.mask_path, expected_hw=image.shape[:2], n_classes=self.n_classes)
                    except Exception as exc:  # noqa: BLE001 (on_error decides, in the driver)
                        failures.append((pos, "mask", _pickled(exc)))
                        continue
                if self.out is not None:
                    write_png(self.out / "predictions" / f"{sample.id}.png", prediction.semantic)
                    if self.overlays:
                        picture = overlay(image, prediction.semantic)
                        if self.class_names is not None:
                            picture = with_legend(picture, prediction.semantic, self.class_names)
                        write_jpeg(self.out / "overlays" / f"{sample.id}.jpg", picture)
                    crash_point("prediction")
                if gt is not None:
                    accumulator.add(gt, prediction.semantic)
            assert accumulator.boundary is not None  # counted by default
            if self.state is not None and not failures:  # the chunk's record: a rerun does not redo it
                write_json(self.state / f"{int(index):08d}.json", {
                    "images": [s.id for s in chunk], "matrix": accumulator.matrix.tolist(),
                    "boundary": accumulator.boundary.tolist(), "scored": accumulator.images,
                    "masks": [self.predictor.masks_seen - seen, self.predictor.masks_kept - kept]})
            rows["chunk"].append(int(index))
            rows["matrix"].append(accumulator.matrix.tobytes())
            rows["boundary"].append(accumulator.boundary.tobytes())
            rows["scored"].append(accumulator.images)
            rows["failures"].append(pickle.dumps(failures))
            rows["masks"].append(pickle.dumps((self.predictor.masks_seen - seen, self.predictor.masks_kept - kept)))
        return {k: np.asarray(v, dtype=np.int64 if k in ("chunk", "scored") else object) for k, v in rows.items()}


def _merge(total: Accumulator, row: dict[str, Any]) -> None:
    n = total.n_classes
    total.matrix += np.frombuffer(row["matrix"], np.int64).reshape(n, n)
    total.boundary += np.frombuffer(row["boundary"], np.int64).reshape(6, n)  # type: ignore[operator]
    total.images += int(row["scored"])


def predict_on_ray(
    config: RunConfig, bank: Path, samples: Sequence[Sample], out: Path | None, *, n_classes: int, overlays: bool,
    errors: ErrorLog, class_names: Sequence[str] | None = None, desc: str = "predict", index: Any = None,
    state: Path | None = None, key: dict[str, Any] | None = None,
) -> tuple[Accumulator | None, dict[str, int]]:
    """Predict ``samples`` with the saved bank ``bank`` on ``config.ray.actors`` actors; PNGs (and
    overlays) go to ``out``. The scores' sums (None when no image has ground truth) and the mask counts.
    ``index`` (a ``Choice``) re-indexes the bank's vectors; None loads its saved index. With ``state``
    (a folder) and ``key`` (what the predictions depend on), each finished chunk leaves a record there
    and a rerun with the same key takes the recorded chunks as they are (``resuming: K of N``)."""
    import ray
    from ray.data import ActorPoolStrategy

    settings = config.ray
    work = chunks(len(samples), config.method.batch_images)
    total = Accumulator(n_classes)
    masks = {"proposed": 0, "kept": 0}
    done = _resume(state, key, work, samples, out, overlays, total, masks) if state is not None else set()
    todo = [c for c in range(len(work)) if c not in done]
    if not todo:
        return (total if total.images else None), masks
    dataset = ray.data.from_items([{"chunk": c, "start": work[c].start, "stop": work[c].stop} for c in todo],
                                  override_num_blocks=len(todo))
    results = dataset.map_batches(
        PredictActor,
        fn_constructor_kwargs={"config": config.model_dump(mode="json"), "bank": os.path.abspath(bank),
                               "samples": absolute(samples),
                               "out": os.path.abspath(out) if out is not None else None, "n_classes": n_classes,
                               "overlays": overlays, "class_names": list(class_names) if class_names else None,
                               "index": index.model_dump() if index is not None else None,
                               "state": os.path.abspath(state) if state is not None else None},
        batch_size=1, batch_format="numpy",
        compute=ActorPoolStrategy(size=min(settings.actors, len(todo)), max_tasks_in_flight_per_actor=1),
        num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
        runtime_env=worker_env(settings.threads or local_threads()),
    )
    with Bar(len(samples), desc) as bar:
        bar.update(sum(len(work[c]) for c in done))
        for row in results.iter_rows():
            failures = sorted(pickle.loads(row["failures"]))
            for pos, stage, error in failures:
                errors.add(samples[pos], stage, pickle.loads(error))  # raises unless on_error is skip
            if out is not None:  # the workers wrote these files: the output folder learns it here
                failed = {pos for pos, _, _ in failures}
                for pos in work[int(row["chunk"])]:
                    if pos not in failed:
                        notify_written(out / "predictions" / f"{samples[pos].id}.png")
                        if overlays:
                            notify_written(out / "overlays" / f"{samples[pos].id}.jpg")
            _merge(total, row)
            seen, kept = pickle.loads(row["masks"])
            masks["proposed"] += seen
            masks["kept"] += kept
            bar.update(len(work[int(row["chunk"])]))
    return (total if total.images else None), masks


def _resume(state: Path, key: dict[str, Any] | None, work: list[range], samples: Sequence[Sample], out: Path | None,
            overlays: bool, total: Accumulator, masks: dict[str, int], *, what: str = "predicted") -> set[int]:
    """The chunks an earlier run with the same ``key`` recorded in ``state`` (their sums added to
    ``total`` and ``masks``); records of another key are removed (only the records this writes)."""
    import json

    from moduseg_core.files.io import remove_path, write_json
    from moduseg_core.files.progress import note

    state.mkdir(parents=True, exist_ok=True)
    settings = state / "settings.json"
    try:
        same = settings.is_file() and json.loads(settings.read_text()) == json.loads(json.dumps(key))
    except (OSError, ValueError):
        same = False
    if not same:
        for stale in state.glob("[0-9]*.json"):
            remove_path(stale)
    write_json(settings, key)
    done: set[int] = set()
    n = total.n_classes
    boundary = total.boundary
    assert boundary is not None  # counted by default
    for c, chunk in enumerate(work):
        path = state / f"{c:08d}.json"
        ids = [samples[p].id for p in chunk]
        files = [f"predictions/{i}.png" for i in ids] + ([f"overlays/{i}.jpg" for i in ids] if overlays else [])
        written = [out / f for f in files] if out is not None else []  # evaluate's records: no files of its own
        try:
            record = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            record = None
        if record is None or record.get("images") != ids or not all(w.is_file() for w in written):
            continue
        total.matrix += np.asarray(record["matrix"], np.int64).reshape(n, n)
        boundary += np.asarray(record["boundary"], np.int64).reshape(6, n)
        total.images += int(record["scored"])
        masks["proposed"] += int(record["masks"][0])
        masks["kept"] += int(record["masks"][1])
        for w in written:
            notify_written(w)
        notify_written(path)
        done.add(c)
    if done:
        note(f"resuming: {sum(len(work[c]) for c in done)} of {len(samples)} images already {what}")
    return done


def _score_chunk(pred_dir: str, samples: list[Sample], n_classes: int) -> dict[str, Any]:
    from moduseg_core.files.io import read_mask

    accumulator = Accumulator(n_classes)
    for sample in samples:
        assert sample.mask_path is not None  # only samples with ground truth are scored
        gt = read_mask(sample.mask_path, n_classes=n_classes)
        pred = read_mask(
            Path(pred_dir) / f"{sample.id}.png", expected_hw=gt.shape, against=f"its ground truth {sample.mask_path}"
        )
        accumulator.add(gt, pred)
    assert accumulator.boundary is not None  # counted by default
    return {
        "matrix": accumulator.matrix.tobytes(),
        "boundary": accumulator.boundary.tobytes(),
        "scored": accumulator.images,
    }


def evaluate_on_ray(config: RunConfig, pred_dir: Path, samples: Sequence[Sample], n_classes: int, *,
                    state: Path | None = None) -> Accumulator:
    """``runner.evaluate_dir``'s sums, one Ray task per chunk of images (checks first, in the driver).
    With ``state`` (a folder: ``evaluate --out``'s ``chunks/``) each finished chunk's counts are recorded
    there, and a rerun over the same files (paths, sizes, times) takes them as they are."""
    import ray

    from moduseg_core.contract.errors import ModusegError
    from moduseg_core.executors.keys import files_digest
    from moduseg_core.files.io import write_json

    for sample in samples:
        if sample.mask_path is None:
            raise ModusegError(f"sample {sample.id} has no ground-truth mask; evaluate needs a split with masks")
        if not (Path(pred_dir) / f"{sample.id}.png").is_file():
            raise ModusegError(
                f"prediction {Path(pred_dir) / f'{sample.id}.png'} is missing; predict every image of the split first"
            )
    task = ray.remote(num_cpus=config.ray.num_cpus)(_score_chunk)
    work = chunks(len(samples), config.method.batch_images)
    whole = absolute(samples)
    total = Accumulator(n_classes)
    done: set[int] = set()
    if state is not None:
        files = [p for s in whole for p in (s.mask_path, Path(pred_dir) / f"{s.id}.png")]
        key = {"evaluate": os.path.abspath(pred_dir), "files": files_digest(files), "classes": n_classes,
               "batch": config.method.batch_images}
        done = _resume(state, key, work, samples, None, False, total, {"proposed": 0, "kept": 0}, what="scored")
    pending = {task.remote(os.path.abspath(pred_dir), whole[r.start:r.stop], n_classes): c
               for c, r in enumerate(work) if c not in done}
    with Bar(len(samples), "evaluate") as bar:
        bar.update(sum(len(work[c]) for c in done))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            c = pending.pop(ready[0])
            row = ray.get(ready[0])
            _merge(total, row)
            if state is not None:  # the chunk's record (written here: a killed driver loses only chunks in flight)
                write_json(state / f"{c:08d}.json", {
                    "images": [samples[p].id for p in work[c]], "scored": int(row["scored"]), "masks": [0, 0],
                    "matrix": np.frombuffer(row["matrix"], np.int64).tolist(),
                    "boundary": np.frombuffer(row["boundary"], np.int64).tolist()})
            bar.update(len(work[c]))
    return total

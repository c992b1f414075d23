"""The bank's per-image work on Ray (heavy: imports ray): Ray Data ``map_batches`` over the job's
chunks with a pool of actors, each building the components once; every actor writes its images'
shards into the store (shared storage) and returns one row per image to the driver.

A worker killed mid-chunk is restarted by Ray and the chunk retried (``max_restarts`` and
``max_task_retries`` are Ray Data's defaults for actor pools); shards are written atomically and
are the same bytes whoever writes them, so a retried chunk changes nothing.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from moduseg_core.contract.components import Timer
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.types import Sample
from moduseg_core.executors.ray_cluster import absolute, worker_env
from moduseg_core.files.failures import ErrorLog, Failure, reason
from moduseg_core.files.progress import Bar
from moduseg_core.pipeline.bank_build import WORK_KINDS, BankWorker, ImageRecords, fit_labeler


class BankActor:
    """One Ray actor: the components built once, then one chunk per call."""

    def __init__(self, config: dict, samples: list[Sample], store: str, n_classes: int, source: int = 0):
        import ray

        from moduseg_core.contract.components import build

        cfg = RunConfig.model_validate(config)
        parts = {kind: build(kind, cfg.choice(kind)) for kind in WORK_KINDS}
        fit_labeler(parts, samples)
        self.worker = BankWorker(parts, cfg.method, n_classes)
        self.samples, self.store, self.method, self.source = samples, store, cfg.method, source
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One row per chunk in, one row per image out (the chunk's shard, or the image's failure)."""
        from moduseg_core.executors.store import shard_name, write_shard
        from moduseg_core.files.faults import crash_point
        from moduseg_core.files.io import read_image

        rows: dict[str, list] = {"chunk": [], "pos": [], "shard": [], "stage": [], "error": [], "node": []}
        for index, start, stop in zip(batch["chunk"], batch["start"], batch["stop"], strict=True):
            items = []
            for pos in range(int(start), int(stop)):
                sample = self.samples[pos]
                try:
                    image: Any = read_image(sample.image_path, self.method.max_image_pixels)
                except Exception as exc:  # noqa: BLE001 (on_error decides, in the driver)
                    image = Failure("read", exc)
                items.append((pos, sample, image))
            results = self.worker.process(items, catch=True)
            records = [r for r in results if isinstance(r, ImageRecords)]
            failed = [r for r in results if not isinstance(r, ImageRecords)]
            shard = write_shard(
                self.store, shard_name(self.source, int(index)), records, [self.samples[f.pos].id for f in failed]
            )
            crash_point("bank-worker")
            for result in results:
                bad = None if isinstance(result, ImageRecords) else result  # the image's failure
                rows["chunk"].append(int(index))
                rows["pos"].append(result.pos)
                rows["shard"].append(shard)
                rows["stage"].append(bad.stage if bad is not None else "")
                rows["error"].append(_pickled(bad.error) if bad is not None else b"")
                rows["node"].append(self.node)
        return {"chunk": np.asarray(rows["chunk"], np.int64), "pos": np.asarray(rows["pos"], np.int64),
                **{k: np.asarray(v, dtype=object) for k, v in rows.items() if k not in ("chunk", "pos")}}


def _pickled(error: BaseException) -> bytes:
    try:
        data = pickle.dumps(error)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 (an exception that does not pickle travels as its one-line reason)
        return pickle.dumps(RuntimeError(reason(error)))


def local_threads() -> int:
    """The CPU threads torch and BLAS use in this process (``OMP_NUM_THREADS``, else the usable cores),
    found without importing torch."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class RayExecutor:
    name = "ray"

    def __init__(self, config: RunConfig):
        self.config = config

    def run_bank(
        self, samples: Sequence[Sample], todo: Sequence[tuple[int, range]], *, store: Any, errors: ErrorLog,
        n_classes: int, on_chunk: Callable[[int, list[ImageRecords], list[str], str], None], timer: Timer | None = None,
        source: int = 0,
    ) -> dict[str, Any]:
        """As ``LocalExecutor.run_bank``: the chunks ``todo`` computed by ``ray.actors`` actors, in any order."""
        import ray
        from ray.data import ActorPoolStrategy

        settings = self.config.ray
        if not todo:
            return {"workers": 0, "nodes": 0}
        dataset = ray.data.from_items([{"chunk": c, "start": chunk.start, "stop": chunk.stop} for c, chunk in todo],
                                      override_num_blocks=len(todo))
        results = dataset.map_batches(
            BankActor,
            fn_constructor_kwargs={
                "config": self.config.model_dump(mode="json"),
                "samples": absolute(samples),
                "store": os.path.abspath(store.folder),
                "n_classes": n_classes,
                "source": source,
            },
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=min(settings.actors, len(todo)), max_tasks_in_flight_per_actor=1),
            num_cpus=settings.num_cpus,
            num_gpus=settings.num_gpus,
            runtime_env=worker_env(settings.threads or local_threads()),
        )
        nodes: set[str] = set()
        size = {c: len(chunk) for c, chunk in todo}
        pending: dict[int, list] = {}
        with Bar(len(samples), "bank") as bar:
            bar.update(len(samples) - sum(size.values()))
            for row in results.iter_rows():
                c, pos = int(row["chunk"]), int(row["pos"])
                nodes.add(str(row["node"]))
                if row["stage"]:
                    errors.add(samples[pos], str(row["stage"]), pickle.loads(row["error"]))  # raises unless skip
                pending.setdefault(c, []).append(row)
                bar.update()
                if len(pending[c]) == size[c]:  # the chunk's rows are all in: it is done
                    rows = sorted(pending.pop(c), key=lambda r: int(r["pos"]))
                    kept = [ImageRecords(int(r["pos"]), samples[int(r["pos"])].id, _EMPTY, _NO_LABELS, 0, 0)
                            for r in rows if not r["stage"]]
                    failed = [samples[int(r["pos"])].id for r in rows if r["stage"]]
                    on_chunk(c, kept, failed, str(rows[0]["shard"]))
        return {"workers": settings.actors, "nodes": len(nodes)}


_EMPTY = np.zeros((0, 0), np.float32)
_NO_LABELS = np.zeros(0, np.int32)

"""The in-process executor: today's path (components built once here, images decoded ahead by the
loader workers), writing each finished image to the shard store so that a killed job resumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from moduseg_core.contract.components import Timer, build
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.types import Sample
from moduseg_core.executors.store import shard_name
from moduseg_core.files.failures import ErrorLog
from moduseg_core.pipeline.bank_build import WORK_KINDS, BankWorker, ImageRecords, fit_labeler, run_chunks


class LocalExecutor:
    name = "local"

    def __init__(self, config: RunConfig):
        self.config = config

    def run_bank(
        self, samples: Sequence[Sample], todo: Sequence[tuple[int, range]], *, store: Any, errors: ErrorLog,
        n_classes: int, on_chunk: Callable[[int, list[ImageRecords], list[str], str], None], timer: Timer | None = None,
        source: int = 0,
    ) -> dict[str, Any]:
        """Compute the chunks ``todo`` (index, positions) of the bank's source ``source``; each finished
        chunk is written to ``store`` and passed to ``on_chunk`` (failures go to ``errors``, under ``on_error``)."""
        config = self.config
        if not todo:
            return {"workers": 0}
        parts = {kind: build(kind, config.choice(kind)) for kind in WORK_KINDS}
        self.parts = parts  # kept: `run` predicts with the encoder the bank was built with
        fit_labeler(parts, samples, timer)
        worker = BankWorker(parts, config.method, n_classes, timer)
        index = {chunk.start: c for c, chunk in todo}
        done = len(samples) - sum(len(chunk) for _, chunk in todo)
        for chunk, records in run_chunks(worker, samples, [chunk for _, chunk in todo], config.method, errors,
                                         timer=timer, total=len(samples), already=done):
            kept = {r.image_id for r in records}
            failed = [samples[p].id for p in chunk if samples[p].id not in kept]
            c = index[chunk.start]
            on_chunk(c, records, failed, store.write(shard_name(source, c), records, failed))
        return {"workers": 1}

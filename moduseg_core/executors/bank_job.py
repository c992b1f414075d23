"""``moduseg build-bank`` through an executor: sharded, resumable, byte-identical whatever runs it.

1. check everything that can refuse the job (config, dataset, the executor and its cluster);
2. mark the output incomplete and open the shard store (``BANK/shards/``, ``store.py``): images
   whose shard exists are done (``resuming: K of N images already in the bank``);
3. the executor computes the rest, in any order, writing one shard per image; the driver appends
   each to the manifest of finished images and applies ``on_error`` to failures;
4. assembly: every image's records read back in split order (then class), the outlier filter over
   the whole bank, the index, the bank saved (``Bank.save``: manifest last).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..bank import Bank
from ..bank_build import WORK_KINDS, ImageRecords, assemble_bank, chunks
from ..components import Built, Timer, identity, validate
from ..config import RunConfig
from ..failures import ERRORS_FILE, ErrorLog
from ..faults import crash_point
from ..kinds import BANK_KINDS
from ..plugins import build_options
from ..progress import note
from ..types import Sample
from .store import SHARDS, ShardStore, shard_name

BANK_FILES = ["manifest.json", "vectors.npy", "labels.npy", "index/", ERRORS_FILE, f"{SHARDS}/"]


def store_settings(config: RunConfig) -> dict[str, Any]:
    """What a bank image's records depend on: a store of other settings is not reused."""
    return {
        "components": {kind: identity(kind, config.choice(kind)) for kind in WORK_KINDS},
        "method": {k: getattr(config.method, k) for k in ("min_region_area", "work_pixels", "batch_images")},
        "dataset": {"name": config.dataset.name, "options": dict(sorted(config.dataset.options.items())),
                    "split": config.bank_split, "limit": config.bank_limit},
    }


def described_parts(config: RunConfig) -> dict[str, Built]:
    """The bank's components as the manifest describes them, without building (loading) them."""
    return {kind: Built(kind, config.choice(kind).name, build_options(kind, config.choice(kind).name,
                                                                       config.choice(kind).options), None)
            for kind in WORK_KINDS}


def build_bank_job(config: RunConfig, out: Path, *, output: Any, timer: Timer | None = None) -> tuple[Bank, ErrorLog, dict]:
    """Build (or resume) the bank of ``config`` into the folder ``out`` (``output``: its ``OutputDir``)
    with ``config.executor``; the bank, the error log and what the executor reports (workers, nodes)."""
    from . import make_executor

    timer = timer or Timer()
    job = open_bank_job(config)
    errors = ErrorLog(config.on_error)
    executor = make_executor(config)  # a missing ray or an unreachable cluster stops here, nothing written
    with output:
        output.begin(BANK_FILES)
        errors.open(out)
        bank, report = build_into(config, out, job, executor=executor, errors=errors, timer=timer)
        output.finish()
    return bank, errors, report


def open_bank_job(config: RunConfig) -> tuple[Any, list[Sample]]:
    """Checks that come before anything is written: the components' options, the bank split."""
    from ..runner import open_dataset

    validate(config, (*BANK_KINDS, "index"))
    dataset, samples = open_dataset(config, config.bank_split, config.bank_limit)
    _check_unique_ids(samples)
    return dataset, samples


def build_into(config: RunConfig, out: Path, job: tuple[Any, list[Sample]], *, executor: Any, errors: ErrorLog,
               timer: Timer) -> tuple[Bank, dict]:
    """Steps 2-4 of the module doc into the bank folder ``out`` (its output already begun)."""
    from ..runner import dataset_info

    dataset, samples = job
    class_names = list(dataset.component.class_names)
    info = dataset_info(dataset, samples)
    started = time.perf_counter()
    store = ShardStore(out / SHARDS, store_settings(config))
    if discarded := store.open():
        note(f"discarded {discarded} stored chunks built with other settings")
    work = chunks(len(samples), config.method.batch_images)
    finished = store.done(samples, work)
    listed = store.listed()
    store.mark_done([(samples[p].id, shard_name(0, c)) for c, chunk in enumerate(work) if finished[c]
                     for p in chunk if samples[p].id not in listed], source=0)
    resumed = sum(len(chunk) for chunk, ok in zip(work, finished) if ok)
    if resumed:
        note(f"resuming: {resumed} of {len(samples)} images already in the bank")
    todo = [(c, chunk) for c, (chunk, ok) in enumerate(zip(work, finished)) if not ok]
    errors_before = len(errors)

    def on_chunk(index: int, records: list[ImageRecords], failed: list[str], shard: str) -> None:
        store.mark_done([(r.image_id, shard) for r in records], source=0)
        crash_point("bank-collect")

    report = executor.run_bank(samples, todo, store=store, errors=errors, n_classes=len(class_names),
                               on_chunk=on_chunk, timer=timer)
    if errors.skip:
        errors.check_some_succeeded(len(samples), since=errors_before)
    store.set_sources([{"dataset": info, "images": len(samples)}])
    records, _ = store.read(samples, work)
    bank = assemble_bank(records, n_samples=len(samples), skipped=len(samples) - len(records), class_names=class_names,
                         parts=described_parts(config), index_choice=config.index, method=config.method,
                         dataset_info=info, timer=timer)
    bank.save(out)
    skipped = len(errors) - errors_before
    report |= {"images": len(samples), "resumed": resumed, "computed": len(samples) - resumed - skipped,
               "skipped": skipped, "seconds": round(time.perf_counter() - started, 3)}
    return bank, report


def _check_unique_ids(samples: list[Sample]) -> None:
    from ..errors import ModusegError

    seen: dict[str, Any] = {}
    for sample in samples:
        if sample.id in seen:
            raise ModusegError(
                f"image id {sample.id!r} appears twice in the bank split ({seen[sample.id]} and {sample.image_path}); "
                "a bank needs one id per image: remove the duplicate from the split list"
            )
        seen[sample.id] = sample.image_path

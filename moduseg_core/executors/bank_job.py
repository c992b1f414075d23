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

from moduseg_core.contract.components import Built, Timer, identity, validate
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.kinds import BANK_KINDS
from moduseg_core.contract.plugins import build_options
from moduseg_core.contract.types import Sample
from moduseg_core.executors.store import SHARDS, ShardStore, shard_name
from moduseg_core.files.failures import ERRORS_FILE, ErrorLog
from moduseg_core.files.faults import crash_point
from moduseg_core.files.progress import note
from moduseg_core.pipeline.bank import Bank
from moduseg_core.pipeline.bank_build import WORK_KINDS, ImageRecords, assemble_bank, chunks

BANK_FILES = ["manifest.json", "vectors.npy", "labels.npy", "index/", "provenance.jsonl", ERRORS_FILE, f"{SHARDS}/"]


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


def build_bank_job(config: RunConfig, out: Path, *, output: Any, timer: Timer | None = None,
                   add: bool = False) -> tuple[Bank, ErrorLog, dict]:
    """Build (or resume) the bank of ``config`` into the folder ``out`` (``output``: its ``OutputDir``)
    with ``config.executor``; with ``add``, add the split to the bank there. The bank, the error log
    and what the executor reports (workers, nodes)."""
    from moduseg_core.executors import make_executor

    timer = timer or Timer()
    job = open_bank_job(config)
    errors = ErrorLog(config.on_error)
    if add:
        _check_addable(ShardStore(out / SHARDS, {}), store_settings(config), job[1],
                       list(job[0].component.class_names), out)
    executor = make_executor(config)  # a missing ray or an unreachable cluster stops here, nothing written
    with output:
        output.begin(BANK_FILES)
        errors.open(out)
        bank, report = build_into(config, out, job, executor=executor, errors=errors, timer=timer, add=add)
        output.finish()
    return bank, errors, report


def open_bank_job(config: RunConfig) -> tuple[Any, list[Sample]]:
    """Checks that come before anything is written: the components' options, the bank split."""
    from moduseg_core.pipeline.runner import open_dataset

    validate(config, (*BANK_KINDS, "index"))
    dataset, samples = open_dataset(config, config.bank_split, config.bank_limit)
    _check_unique_ids(samples)
    return dataset, samples


def build_into(config: RunConfig, out: Path, job: tuple[Any, list[Sample]], *, executor: Any, errors: ErrorLog,
               timer: Timer, add: bool = False) -> tuple[Bank, dict]:
    """Steps 2-4 of the module doc into the bank folder ``out`` (its output already begun). With
    ``add``, the split is a new source of the bank already there (``build-bank --add``): its images
    are computed, the earlier sources' are read back, and the filter runs over all of them."""
    from moduseg_core.pipeline.runner import dataset_info

    dataset, samples = job
    class_names = list(dataset.component.class_names)
    info = dataset_info(dataset, samples)
    started = time.perf_counter()
    settings = store_settings(config)
    store = ShardStore(out / SHARDS, settings)
    if add:
        sources = _check_addable(store, settings, samples, class_names, out)
        store.repair()
        source = next((i for i, s in enumerate(sources) if s["key"] == settings["dataset"]), len(sources))
        sources = sources[:source] + [{"key": settings["dataset"], "dataset": info, "images": len(samples)}]
    else:
        if discarded := store.open():
            note(f"discarded {discarded} stored chunks built with other settings")
        source, sources = 0, [{"key": settings["dataset"], "dataset": info, "images": len(samples)}]
    work = chunks(len(samples), config.method.batch_images)
    finished = store.done(samples, work, source)
    listed = store.listed()
    store.mark_done([(samples[p].id, shard_name(source, c)) for c, chunk in enumerate(work) if finished[c]
                     for p in chunk if samples[p].id not in listed], source=source)
    resumed = sum(len(chunk) for chunk, ok in zip(work, finished, strict=True) if ok)
    if resumed:
        note(f"resuming: {resumed} of {len(samples)} images already in the bank")
    todo = [(c, chunk) for c, (chunk, ok) in enumerate(zip(work, finished, strict=True)) if not ok]
    errors_before = len(errors)

    def on_chunk(index: int, records: list[ImageRecords], failed: list[str], shard: str) -> None:
        store.mark_done([(r.image_id, shard) for r in records], source=source)
        crash_point("bank-collect")

    report = executor.run_bank(samples, todo, store=store, errors=errors, n_classes=len(class_names),
                               on_chunk=on_chunk, timer=timer, source=source)
    if errors.skip:
        errors.check_some_succeeded(len(samples), since=errors_before)
    store.set_sources(sources)
    records: list[ImageRecords] = []
    for index, entry in enumerate(sources):  # canonical order: source, then split order, then class
        got, _ = store.read_source(index, entry["images"], config.method.batch_images, offset=len(records))
        records += got
    total = sum(entry["images"] for entry in sources)
    extra = {"sources": [entry["dataset"] for entry in sources]} if len(sources) > 1 else None
    bank = assemble_bank(records, n_samples=total, skipped=total - len(records), class_names=class_names,
                         parts=described_parts(config), index_choice=config.index, method=config.method,
                         dataset_info=sources[0]["dataset"], timer=timer, extra_manifest=extra)
    bank.save(out)
    skipped = len(errors) - errors_before
    report |= {"images": len(samples), "resumed": resumed, "computed": len(samples) - resumed - skipped,
               "skipped": skipped, "sources": len(sources), "seconds": round(time.perf_counter() - started, 3)}
    return bank, report


def _check_addable(store: ShardStore, settings: dict, samples: list[Sample], class_names: list[str],
                   out: Path) -> list[dict]:
    """The bank's sources, after checking that ``samples`` can be added to the bank in ``out``."""
    import json

    from moduseg_core.contract.errors import ModusegError

    have = store.read_settings()
    if have is None or not (out / "manifest.json").is_file():
        raise ModusegError(f"--add needs a bank built by `moduseg build-bank` in {out} (no bank store there); "
                           "build it first, or leave out --add")
    mismatch = sorted(k for k in set(have) | set(settings) if k != "dataset" and have.get(k) != settings.get(k))
    if mismatch:
        raise ModusegError(f"--add: the bank in {out} was built with other {', '.join(mismatch)} "
                           f"({json.dumps({k: have.get(k) for k in mismatch})[:300]}); add with the bank's settings")
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest.get("class_names") != class_names:
        raise ModusegError(
            f"--add: the new images' classes differ from the bank's ({len(manifest.get('class_names', []))} "
            f"classes); add a split of a dataset with the same classes"
        )
    sources = store.sources()
    new = settings["dataset"]
    earlier = {i: k for k, entry in enumerate(sources) if entry["key"] != new
               for i in store.image_ids(k, entry["images"], settings["method"]["batch_images"])}
    clash = next((s for s in samples if s.id in earlier), None)
    if clash is not None:
        raise ModusegError(f"--add: image {clash.id!r} is already in the bank (source {earlier[clash.id]}: "
                           f"{sources[earlier[clash.id]]['key']}); add images the bank does not hold")
    return sources


def _check_unique_ids(samples: list[Sample]) -> None:
    from moduseg_core.contract.errors import ModusegError

    seen: dict[str, Any] = {}
    for sample in samples:
        if sample.id in seen:
            raise ModusegError(
                f"image id {sample.id!r} appears twice in the bank split ({seen[sample.id]} and {sample.image_path}); "
                "a bank needs one id per image: remove the duplicate from the split list"
            )
        seen[sample.id] = sample.image_path

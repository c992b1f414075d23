"""``run_bench``: the components built once, (b) ModuSeg's streamed pipeline and (a) the released
loop timed on the same images against the same synthetic bank; the proposal-stage split per engine
(sam/sam2), the floor and projection added."""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.bench.measure import bank_projection, device_text, encoder_floor, gpu_memory
from moduseg_core.bench.proposal_split import engine_proposers, split_propose
from moduseg_core.bench.released import released_loop
from moduseg_core.bench.report import bench_markdown
from moduseg_core.contract.components import Timer, build, package_versions
from moduseg_core.contract.config import RunConfig
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import read_image, write_json, write_text
from moduseg_core.files.progress import progress
from moduseg_core.pipeline.inference import Predictor
from moduseg_core.pipeline.streaming import stream_predictions


class CappedProposer:
    """At most ``cap`` masks per image, the best-scoring (ties: proposer order): random weights
    can make a proposer return far more masks than trained ones; both sides see the same cap."""

    def __init__(self, component: Any, cap: int):
        self.component = component
        self.cap = cap
        self.device = getattr(component, "device", None)

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Any:
        return self._capped(self.component.propose(image, image_id=image_id))

    def propose_batch(self, images: Sequence[np.ndarray], image_ids: Sequence[str | None]) -> list[Any]:
        from moduseg_core.pipeline.inference import propose_many

        return [self._capped(found) for found in propose_many(self.component, images, image_ids)]

    def _capped(self, found: Any) -> Any:
        if len(found) <= self.cap:
            return found
        return found.select(np.sort(np.argsort(-found.scores, kind="stable")[: self.cap]))


class SyntheticBank:
    """What ``Predictor`` needs of a bank: an index and a size."""

    def __init__(self, index: Any, size: int):
        self.index = index
        self.size = size

    def __len__(self) -> int:
        return self.size


def proposal_stage(component: Any, engines: Sequence[str], warm: Sequence[Sample],
                   timed: Sequence[Sample]) -> dict[str, Any]:
    """The proposal stage split per engine on the pipeline proposer's model and the bench's images."""
    proposers = engine_proposers(component, engines)
    return split_propose(proposers, [read_image(s.image_path) for s in timed], [read_image(s.image_path) for s in warm])


# -- (b) the framework -----------------------------------------------------------------------


def framework(samples: Sequence[Sample], predictor: Predictor) -> tuple[list[np.ndarray], float]:
    """(b): semantic maps and the wall time of the streamed pipeline."""
    t0 = time.perf_counter()
    maps = [
        p.semantic
        for _, _, p in progress(stream_predictions(predictor, samples), total=len(samples), desc="bench (b) moduseg")
    ]
    return maps, time.perf_counter() - t0


def run_bench(
    config: RunConfig,
    *,
    images: int = 8,
    bank_size: int = 30_000,
    batch: int | None = None,
    warmup: int = 1,
    loop: bool = True,
    bank_images: int = 0,
    floor_batch: int = 16,
    max_masks: int | None = None,
    engines: Sequence[str] = (),
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure (a) and (b) on the first ``images`` of the eval split; see the module doc. ``engines``
    (of a ``sam``/``sam2`` proposer): also split its proposal stage per engine (``proposal_split``)."""
    from moduseg_core.pipeline.runner import open_dataset

    if batch:
        config = config.model_copy(update={"method": config.method.model_copy(update={"batch_images": batch})})
        enc = config.encoder.model_copy(update={"options": {**config.encoder.options, "batch_size": batch}})
        config = config.model_copy(update={"encoder": enc})
    wanted = images + warmup
    dataset, samples = open_dataset(config, config.eval_split, min(wanted, config.eval_limit or wanted))
    if len(samples) < warmup + 1:
        raise ModusegError(
            f"split {config.eval_split!r} has {len(samples)} image(s); bench needs at least {warmup + 1} "
            "(--images/--warmup)"
        )
    warm, timed = samples[:warmup], samples[warmup:]
    n_classes = len(dataset.component.class_names)
    proposer = build("proposer", config.proposer)
    if max_masks:
        proposer = dataclasses.replace(proposer, component=CappedProposer(proposer.component, max_masks))
    encoder = build("encoder", config.encoder)
    aggregator = build("aggregator", config.aggregator)
    index = build("index", config.index)

    # The bank: retrieval cost depends on its size and width only, so it is synthetic (VOC
    # train_aug gives ~30k region vectors); both sides search the same vectors.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((bank_size, encoder.component.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, bank_size).astype(np.int32)
    index.component.add(vectors, labels)
    bank: Any = SyntheticBank(index.component, bank_size)  # what Predictor uses of a Bank, duck-typed
    predictor = Predictor(bank, proposer, encoder, aggregator, config.method)
    reset, peak = gpu_memory()

    report: dict[str, Any] = {
        "images": len(timed), "warmup": len(warm), "bank_size": bank_size, "max_masks": max_masks,
        "components": {k: {"name": config.choice(k).name, "options": config.choice(k).options}
                       for k in ("proposer", "encoder", "aggregator", "index")},
        "method": config.method.model_dump(mode="json"),
        "device": device_text(), "versions": package_versions(), "python": platform.python_version(),
    }

    # (b) first: the framework, warmed up on its own images
    framework(warm, predictor)
    predictor.timer = Timer()
    predictor.masks_seen = predictor.masks_kept = 0
    reset()
    maps_b, wall_b = framework(timed, predictor)
    report["framework"] = {
        "wall_s": wall_b, "images_per_s": len(timed) / wall_b, "peak_gpu_gib": peak(),
        "stages_s": dict(predictor.timer.seconds), "masks_per_image": predictor.masks_seen / len(timed),
    }

    if loop:
        loop_encoder = encoder
        if getattr(getattr(encoder.component, "options", None), "dtype", "float32") != "float32":
            opts = {**config.encoder.options, "dtype": "float32"}  # the released code runs float32
            loop_encoder = build("encoder", config.encoder.model_copy(update={"options": opts}))
        bank_for_loop: Any = vectors
        device = getattr(encoder.component, "device", None)
        if device is not None and str(device).startswith("cuda"):
            import torch

            bank_for_loop = torch.from_numpy(vectors).to(device)
        released_loop(warm, proposer, loop_encoder, bank_for_loop, labels, config)
        reset()
        t0 = time.perf_counter()
        maps_a, timer_a, seen_a = released_loop(timed, proposer, loop_encoder, bank_for_loop, labels, config)
        wall_a = time.perf_counter() - t0
        same = sum(np.array_equal(a, b) for a, b in zip(maps_a, maps_b, strict=True))
        agree = float(np.mean([np.mean(a == b) for a, b in zip(maps_a, maps_b, strict=True)]))
        report["loop"] = {
            "wall_s": wall_a, "images_per_s": len(timed) / wall_a, "peak_gpu_gib": peak(),
            "stages_s": dict(timer_a.seconds), "masks_per_image": seen_a / len(timed),
        }
        report["speedup"] = wall_a / wall_b
        post_a = sum(timer_a.seconds.get(s, 0.0) for s in ("pool", "retrieve", "nms+paint"))
        post_b = sum(predictor.timer.seconds.get(s, 0.0) for s in ("pool", "retrieve", "nms+paint"))
        report["speedup_pool_retrieve_nms"] = post_a / post_b if post_b else None
        report["identical_maps"] = f"{same}/{len(timed)}"
        report["pixel_agreement"] = agree

    if engines:
        report["proposal_split"] = proposal_stage(proposer.component, engines, warm, timed)

    probe = read_image(timed[0].image_path)
    report["floor"] = encoder_floor(encoder, probe, floor_batch) if "torch" in sys.modules else None

    if bank_images:
        propose = report["framework"]["stages_s"].get("propose", 0.0) / len(timed)
        report["bank_build"] = bank_projection(config, encoder, bank_images, propose)
    if out is not None:
        out = Path(out)
        write_json(out / "bench.json", report)
        write_text(out / "bench.md", bench_markdown(report))
    return report

"""``moduseg bench``: the released code's loop and ModuSeg's pipeline, side by side in one process.

On the same images, with the same proposer, the same encoder architecture and weights and
the same bank:

(a) **the released code's way**, re-created from its description (shared/METHOD.md, "What
    the released code does slowly"): one image at a time — decode, propose, encode in
    float32 at batch 1 — then one mask at a time: pad the mask, resize it to the patch grid
    with OpenCV ``INTER_AREA`` on the CPU, pool the tokens; one exact search per image (a
    full sort of every similarity row, on the encoder's device); a ``Counter`` vote per
    mask; NMS with a ``logical_and`` / ``logical_or`` per pair; painting per mask.
(b) **ModuSeg's pipeline** as ``moduseg run`` executes it: images decoded ahead by loader
    workers, encoder batches in the configured dtype, all masks of an image pooled with
    batched products (on the GPU with ``aggregator.device``), batched top-k (on the GPU with
    ``index.device``), box-restricted NMS and painting overlapped with the next batch.

The report gives images/s per stage and end to end, the masks per image, peak GPU memory,
the ratio b/a, whether the two produced the same semantic maps, the encoder's FLOPs per
image against the device's measured matmul rate (the floor), and a projection of bank
building over a VOC-sized training set. Random weights are fine for speed, but they change
how many masks a proposer returns (the report says how many it saw).
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .components import Built, Timer, build, package_versions
from .config import RunConfig
from .errors import ModusegError
from .inference import Predictor
from .io import read_image, write_json, write_text
from .method.pooling import patch_weights
from .pipeline import stream_predictions
from .progress import progress
from .types import BACKGROUND, Sample

#: VOC 2012 train_aug, the bank the projection is made for
VOC_TRAIN_AUG = 10_582
LOOP_STAGES = ("decode", "propose", "encode", "pool", "retrieve", "nms+paint")


class _CappedProposer:
    """At most ``cap`` masks per image, the best-scoring (ties: proposer order): random weights
    can make a proposer return far more masks than trained ones; both sides see the same cap."""

    def __init__(self, component: Any, cap: int):
        self.component = component
        self.cap = cap
        self.device = getattr(component, "device", None)

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Any:
        found = self.component.propose(image, image_id=image_id)
        if len(found) <= self.cap:
            return found
        return found.select(np.sort(np.argsort(-found.scores, kind="stable")[: self.cap]))


class _SyntheticBank:
    """What ``Predictor`` needs of a bank: an index and a size."""

    def __init__(self, index: Any, size: int):
        self.index = index
        self.size = size

    def __len__(self) -> int:
        return self.size


# -- (a) the released code's loop --------------------------------------------------------------------


def _loop_pool(cv2: Any, tokens: np.ndarray, geometry: Any, mask: np.ndarray) -> np.ndarray | None:
    gh, gw = geometry.grid_hw
    if geometry.resized_hw == geometry.image_hw:  # the released code: pad, then INTER_AREA to the grid
        ph, pw = geometry.padded_hw
        padded = np.zeros((ph, pw), np.float32)
        padded[: mask.shape[0], : mask.shape[1]] = mask
        weights = cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA)
    else:  # the released code never resizes; the footprint rule for resized input, still one mask at a time
        weights = patch_weights(mask[None], geometry)[0]
    if weights.sum() < 1e-6:
        return None
    pooled = (weights[..., None] * tokens).sum(axis=(0, 1)) / (weights.sum() + 1e-8)
    norm = np.linalg.norm(pooled)
    if not np.isfinite(pooled).all() or norm < 1e-6:
        return None
    return pooled / norm


def _loop_search(vectors: np.ndarray, bank: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One exact search per image: every similarity row fully sorted (torch on the bank's device, or numpy)."""
    if isinstance(bank, np.ndarray):
        sims = vectors @ bank.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, order, axis=1), order
    import torch

    sims = torch.from_numpy(vectors).to(bank.device) @ bank.T
    values, order = torch.sort(sims, dim=1, descending=True, stable=True)
    return values[:, :k].cpu().numpy(), order[:, :k].cpu().numpy()


def _loop_vote(sims: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    counts = Counter(labels.tolist())
    best = max(counts.values())
    tied = [c for c, n in counts.items() if n == best]
    sums = {c: float(sims[labels == c].sum()) for c in tied}
    winner = max(sorted(tied), key=lambda c: sums[c])
    return winner, sums[winner] / counts[winner]


def _loop_nms_paint(masks: list[np.ndarray], labels: list[int], scores: list[float], hw, iou: float, min_area: int) -> np.ndarray:
    final = []
    for label in sorted(set(labels)):
        order = sorted((i for i in range(len(labels)) if labels[i] == label), key=lambda i: -scores[i])
        keep: list[int] = []
        for i in order:
            if masks[i].sum() < min_area:
                continue
            ok = True
            for j in keep:
                inter = np.logical_and(masks[i], masks[j]).sum()
                union = np.logical_or(masks[i], masks[j]).sum()
                if union and inter / union > iou:
                    ok = False
                    break
            if ok:
                keep.append(i)
        final += keep
    semantic = np.zeros(hw, np.int32)
    painted = np.zeros(hw, bool)
    for i in sorted(final, key=lambda i: -scores[i]):
        if labels[i] == BACKGROUND:
            continue
        fresh = masks[i] & ~painted
        semantic[fresh] = labels[i]
        painted |= fresh
    return semantic


def released_loop(
    samples: Sequence[Sample], proposer: Built, encoder: Built, bank: Any, bank_labels: np.ndarray, config: RunConfig
) -> tuple[list[np.ndarray], Timer, int]:
    """(a): semantic maps, seconds per stage, masks seen."""
    import cv2

    method = config.method
    timer = Timer()
    maps, seen = [], 0
    for sample in progress(samples, total=len(samples), desc="bench (a) loop"):
        t0 = time.perf_counter()
        image = read_image(sample.image_path)
        t1 = time.perf_counter()
        found = proposer.component.propose(image, image_id=sample.id)
        masks = [m for m in found.masks if m.sum() >= method.min_mask_area]
        t2 = time.perf_counter()
        features = encoder.component.encode(image)
        t3 = time.perf_counter()
        kept, vectors = [], []
        for mask in masks:
            vector = _loop_pool(cv2, features.tokens, features.geometry, mask)
            if vector is not None:
                kept.append(mask)
                vectors.append(vector)
        t4 = time.perf_counter()
        labels, scores = [], []
        if vectors:
            sims, rows = _loop_search(np.stack(vectors).astype(np.float32), bank, min(method.top_k, len(bank_labels)))
            for s, r in zip(sims, rows):
                label, score = _loop_vote(s, bank_labels[r])
                labels.append(label)
                scores.append(score)
        t5 = time.perf_counter()
        maps.append(_loop_nms_paint(kept, labels, scores, image.shape[:2], method.nms_iou, method.min_mask_area))
        t6 = time.perf_counter()
        seen += len(masks)
        for stage, seconds in zip(LOOP_STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            timer.add(stage, seconds)
    return maps, timer, seen


# -- (b) the framework ---------------------------------------------------------------------------------


def framework(samples: Sequence[Sample], predictor: Predictor) -> tuple[list[np.ndarray], float]:
    """(b): semantic maps and the wall time of the streamed pipeline."""
    t0 = time.perf_counter()
    maps = [p.semantic for _, _, p in progress(stream_predictions(predictor, samples), total=len(samples), desc="bench (b) moduseg")]
    return maps, time.perf_counter() - t0


# -- the floor -------------------------------------------------------------------------------------------


def encoder_flops(encoder: Built, image: np.ndarray) -> float | None:
    """FLOPs of one ``encode`` of ``image`` as torch's FLOP counter sees them (None without torch)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    component = encoder.component
    compiled = getattr(component, "_run", None)
    if compiled is not None and hasattr(component, "_forward"):
        component._run = component._forward  # count in eager mode: a compiled graph bypasses the counter
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            component.encode(image)
    finally:
        if compiled is not None:
            component._run = compiled
    return float(counter.get_total_flops())


def matmul_rate(device: str, dtype_name: str, size: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of a square matrix product on ``device`` in ``dtype_name``."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    cuda = str(device).startswith("cuda")
    size = size or (8192 if cuda else 1024)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def encoder_floor(encoder: Built, image: np.ndarray, batch: int, repeats: int = 3) -> dict[str, Any]:
    """Encoder throughput at ``batch`` same-size images vs its FLOP floor on the device."""
    component = encoder.component
    device = str(getattr(component, "device", "cpu"))
    dtype = getattr(getattr(component, "options", None), "dtype", "float32")
    flops = encoder_flops(encoder, image)
    images = [image] * batch
    component.encode_batch(images)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        component.encode_batch(images)
    per_second = batch * repeats / (time.perf_counter() - t0)
    rate = matmul_rate(device, dtype)
    out = {"device": device, "dtype": dtype, "batch": batch, "image_hw": list(image.shape[:2]),
           "images_per_s": per_second, "matmul_flops_per_s": rate, "flops_per_image": flops}
    if flops:
        out["achieved_flops_per_s"] = flops * per_second
        out["fraction_of_floor"] = flops * per_second / rate
        out["floor_images_per_s"] = rate / flops
    return out


# -- the whole bench ---------------------------------------------------------------------------------------


def _gpu_memory() -> tuple[Any, Any]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return (lambda: None), (lambda: None)

    def reset() -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def peak() -> float:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30

    return reset, peak


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
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure (a) and (b) on the first ``images`` of the eval split; see the module doc."""
    from .runner import open_dataset

    if batch:
        config = config.model_copy(update={"method": config.method.model_copy(update={"batch_images": batch})})
        enc = config.encoder.model_copy(update={"options": {**config.encoder.options, "batch_size": batch}})
        config = config.model_copy(update={"encoder": enc})
    wanted = images + warmup
    dataset, samples = open_dataset(config, config.eval_split, min(wanted, config.eval_limit or wanted))
    if len(samples) < warmup + 1:
        raise ModusegError(f"split {config.eval_split!r} has {len(samples)} image(s); bench needs at least {warmup + 1} (--images/--warmup)")
    warm, timed = samples[:warmup], samples[warmup:]
    n_classes = len(dataset.component.class_names)
    proposer = build("proposer", config.proposer)
    if max_masks:
        proposer = dataclasses.replace(proposer, component=_CappedProposer(proposer.component, max_masks))
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
    predictor = Predictor(_SyntheticBank(index.component, bank_size), proposer, encoder, aggregator, config.method)
    reset, peak = _gpu_memory()

    report: dict[str, Any] = {
        "images": len(timed), "warmup": len(warm), "bank_size": bank_size, "max_masks": max_masks,
        "components": {k: {"name": config.choice(k).name, "options": config.choice(k).options}
                       for k in ("proposer", "encoder", "aggregator", "index")},
        "method": config.method.model_dump(mode="json"),
        "device": _device_text(), "versions": package_versions(), "python": platform.python_version(),
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
        same = sum(np.array_equal(a, b) for a, b in zip(maps_a, maps_b))
        agree = float(np.mean([np.mean(a == b) for a, b in zip(maps_a, maps_b)]))
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


def bank_projection(config: RunConfig, encoder: Built, n: int, propose_per_image: float) -> dict[str, Any]:
    """Time bank building (label, purify, encode, pool) over ``n`` bank images; project to VOC train_aug.
    ``propose_per_image`` (from (b)) is added for a labeler that also runs the proposer (map correction)."""
    from .bank import build_bank
    from .runner import dataset_info, open_dataset

    dataset, samples = open_dataset(config, config.bank_split, n)
    parts = {kind: build(kind, config.choice(kind)) for kind in ("labeler", "purifier", "aggregator")}
    timer = Timer()
    t0 = time.perf_counter()
    build_bank(samples, n_samples=len(samples), class_names=list(dataset.component.class_names),
               labeler=parts["labeler"], purifier=parts["purifier"], encoder=encoder, aggregator=parts["aggregator"],
               index_choice=config.index, method=config.method, dataset_info=dataset_info(dataset, samples), timer=timer)
    per_image = (time.perf_counter() - t0) / len(samples)
    return {
        "images": len(samples), "wall_s": per_image * len(samples), "stages_s": dict(timer.seconds),
        "for_images": VOC_TRAIN_AUG,
        "projected_min": VOC_TRAIN_AUG * per_image / 60,
        "projected_with_proposer_min": VOC_TRAIN_AUG * (per_image + propose_per_image) / 60,
    }


def _device_text() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {_cpus()} cores" + (
        f" (torch {torch.__version__})" if torch is not None else ""
    )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bench_markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown table docs/performance.md shows."""
    comps = ", ".join(f"{k} `{v['name']}`" for k, v in report["components"].items())
    lines = [
        f"# moduseg bench — {report['device']}",
        "",
        f"{report['images']} images (+{report['warmup']} warm-up), bank {report['bank_size']:,} vectors, {comps}.",
        "",
        "| stage | (a) released loop, img/s | (b) ModuSeg, img/s | b/a |",
        "|---|---:|---:|---:|",
    ]
    n = report["images"]
    loop = report.get("loop")
    stages_b = report["framework"]["stages_s"]
    names = list(LOOP_STAGES) + [s for s in stages_b if s not in LOOP_STAGES and s != "decode (waited)"]
    for stage in names:
        b = stages_b.get(stage)
        a = loop["stages_s"].get(stage) if loop else None
        if stage == "decode":  # (b) decodes in loader workers: what it shows is the time spent waiting
            b = stages_b.get("decode (waited)")
            stage = "decode (b: waited for workers)"
        cell_a = f"{n / a:.2f}" if a else "–"
        cell_b = f"{n / b:.2f}" if b else ("overlapped" if stage == "decode" else "–")
        ratio = f"{a / b:.1f}×" if a and b else "–"
        lines.append(f"| {stage} | {cell_a} | {cell_b} | {ratio} |")
    fw = report["framework"]
    a_total = f"{loop['images_per_s']:.2f}" if loop else "–"
    lines.append(f"| **end to end** | {a_total} | {fw['images_per_s']:.2f} | "
                 f"{report['speedup']:.1f}× |" if loop else f"| **end to end** | – | {fw['images_per_s']:.2f} | – |")
    lines.append("")
    cap = f", at most {report['max_masks']} per image (--max-masks)" if report.get("max_masks") else ""
    lines.append(f"Masks per image: {fw['masks_per_image']:.1f}" + (f" (loop {loop['masks_per_image']:.1f})" if loop else "") + cap)
    if fw.get("peak_gpu_gib") is not None:
        lines.append(f"Peak GPU memory: (b) {fw['peak_gpu_gib']:.2f} GiB" + (f", (a) {loop['peak_gpu_gib']:.2f} GiB" if loop else ""))
    if loop:
        lines.append(f"Pooling + retrieval + NMS: {report['speedup_pool_retrieve_nms']:.1f}× (b over a)")
        lines.append(f"Identical semantic maps: {report['identical_maps']} (pixel agreement {100 * report['pixel_agreement']:.2f}%)")
    floor = report.get("floor")
    if floor and floor.get("flops_per_image"):
        lines += [
            "",
            f"Encoder floor ({floor['dtype']}, batch {floor['batch']}, {floor['image_hw'][0]}×{floor['image_hw'][1]}): "
            f"{floor['flops_per_image'] / 1e9:.1f} GFLOP/image; measured matmul rate {floor['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s; "
            f"encoder {floor['images_per_s']:.2f} img/s = {floor['achieved_flops_per_s'] / 1e12:.2f} TFLOP/s = "
            f"**{100 * floor['fraction_of_floor']:.0f}% of the floor** ({floor['floor_images_per_s']:.1f} img/s at 100%).",
        ]
    bank = report.get("bank_build")
    if bank:
        lines += [
            "",
            f"Bank build: {bank['images']} images in {bank['wall_s']:.1f} s → {bank['for_images']:,} images projected "
            f"{bank['projected_min']:.1f} min ({bank['projected_with_proposer_min']:.1f} min if the labeler also runs the proposer once per image).",
        ]
    return "\n".join(lines) + "\n"

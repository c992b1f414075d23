"""The proposal stage of the ``sam`` / ``sam2`` proposers split into encoder, decoder and post-processing
seconds, ``engine=library`` and ``engine=fast`` side by side on one model and the same images.

- **library**: the encoder is the library predictor's ``set_image`` (wrapped); the decoder is the model's
  prompt-encoder and mask-decoder forward passes (``prompt_encoder`` + ``mask_decoder`` in segment-anything,
  ``sam_prompt_encoder`` + ``sam_mask_decoder`` in sam2; forward hooks); post-processing is the rest of
  ``propose`` (upsampling, thresholds, stability, run-length round trip, box NMS, the ``Proposals``).
- **fast**: encoder and decoder as ``FastGenerator.seconds`` records them (its decoder lap covers the same
  prompt-encoder + mask-decoder calls); post-processing is again the rest of ``propose``.

On CUDA every boundary synchronises the device, so queued kernels are charged to the part that queued them.
Both engines share the model, each image is proposed by both (interleaved, the first engine alternating per
image), and their masks and scores are compared. ``moduseg bench`` (``--engines``) and
``benchmarks/bench_proposals.py`` use this module; nothing here imports torch before it runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError

ENGINES = ("library", "fast")
PARTS = ("encoder", "decoder", "post-processing")
#: the proposers that have ``engine: library|fast``
SPLIT_PROPOSERS = ("sam", "sam2")


def parse_engines(text: str, proposer: str) -> tuple[str, ...]:
    """``--engines`` → engines. ``auto``: both for sam/sam2, none otherwise; ``none``: none."""
    value = text.strip().lower()
    if value == "none":
        return ()
    if value == "auto":
        return ENGINES if proposer in SPLIT_PROPOSERS else ()
    engines = tuple(e.strip() for e in value.split(",") if e.strip())
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines or len(set(engines)) != len(engines):
        raise ModusegError(
            f"--engines {text!r} is not auto, none or a comma list of distinct engines from {', '.join(ENGINES)}; "
            "pass e.g. --engines library,fast"
        )
    if proposer not in SPLIT_PROPOSERS:
        raise ModusegError(
            f"--engines {text!r} times the engines of proposer {' or '.join(SPLIT_PROPOSERS)}, not {proposer!r}; "
            "pass --proposer sam2 (or sam), or drop --engines"
        )
    return tuple(e for e in ENGINES if e in engines)


def _sync(device: Any) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _unwrap(component: Any) -> Any:
    """The proposer under bench wrappers (``CappedProposer`` keeps it as ``.component``)."""
    while not hasattr(component, "generator") and hasattr(component, "component"):
        component = component.component
    return component


def _decoder_modules(proposer: Any) -> tuple[Any, Any]:
    model = proposer.model
    if hasattr(model, "sam_mask_decoder"):  # sam2's SAM2Base
        return model.sam_prompt_encoder, model.sam_mask_decoder
    return model.prompt_encoder, model.mask_decoder  # segment-anything's Sam


@contextmanager
def library_split(proposer: Any, seconds: dict[str, float]) -> Iterator[dict[str, float]]:
    """While inside, the library engine of ``proposer`` adds its encoder (``set_image``) and decoder
    (prompt encoder + mask decoder forward) seconds to ``seconds``; everything is unwrapped on exit
    (the model may be shared with an ``engine=fast`` proposer, which must not be counted here)."""
    predictor = proposer.generator.predictor
    device = proposer.device
    seconds.setdefault("encoder", 0.0)
    seconds.setdefault("decoder", 0.0)
    original = predictor.set_image
    own = vars(predictor).get("set_image")  # an instance attribute already there (another wrapper) is put back

    def set_image(*args: Any, **kwargs: Any) -> Any:
        _sync(device)
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        _sync(device)
        seconds["encoder"] += time.perf_counter() - t0
        return out

    started: list[float] = []

    def before(module: Any, args: Any) -> None:
        _sync(device)
        started.append(time.perf_counter())

    def after(module: Any, args: Any, output: Any) -> None:
        _sync(device)
        seconds["decoder"] += time.perf_counter() - started.pop()

    handles = []
    predictor.set_image = set_image
    try:
        for module in _decoder_modules(proposer):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        yield seconds
    finally:
        for handle in handles:
            handle.remove()
        if own is None:
            del predictor.set_image  # the class's method again
        else:
            predictor.set_image = own


def engine_proposers(component: Any, engines: Sequence[str]) -> dict[str, Any]:
    """One proposer per engine on ``component``'s model (the same weights, random ones included), with its
    settings (both engines run every setting)."""
    from moduseg_core.contract.plugins import build_options

    base = _unwrap(component)
    if not hasattr(base, "generator") or not hasattr(base, "model"):
        raise ModusegError(
            f"proposer {getattr(base, 'name', type(base).__name__)!r} has no library/fast engines to split; "
            f"use proposer {' or '.join(SPLIT_PROPOSERS)}, or pass --engines none"
        )
    proposers: dict[str, Any] = {}
    for engine in engines:
        if base.options.engine == engine:
            proposers[engine] = base
            continue
        values = {**base.options.model_dump(), "engine": engine}
        proposers[engine] = type(base)(build_options("proposer", base.name, values), model=base.model)
    return proposers


def _timed(engine: str, proposer: Any, image: np.ndarray) -> tuple[Any, dict[str, float]]:
    """One ``propose`` and its seconds per part (post-processing = wall − encoder − decoder)."""
    _sync(proposer.device)
    if engine == "library":
        parts: dict[str, float] = {}
        t0 = time.perf_counter()
        with library_split(proposer, parts):
            found = proposer.propose(image)
        _sync(proposer.device)
        wall = time.perf_counter() - t0
    else:
        before = dict(proposer.fast.seconds)
        t0 = time.perf_counter()
        found = proposer.propose(image)
        _sync(proposer.device)
        wall = time.perf_counter() - t0
        parts = {k: proposer.fast.seconds[k] - before[k] for k in ("encoder", "decoder")}
    parts["post-processing"] = wall - parts["encoder"] - parts["decoder"]
    parts["total"] = wall
    return found, parts


def agreement(pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """library vs fast ``Proposals`` per image: identical images, the fraction of pixels whose mask coverage
    (how many masks contain the pixel) differs, and the largest score difference where the counts match."""
    same, differ, score_diff = 0, [], 0.0
    for want, got in pairs:
        same_masks = want.masks.shape == got.masks.shape and np.array_equal(want.masks, got.masks)
        if same_masks and np.array_equal(want.scores, got.scores):
            same += 1
            differ.append(0.0)
            continue
        # masks are N×H×W at the image's size (N may be 0): compare how many masks cover each pixel
        cover_a, cover_b = want.masks.sum(0, dtype=np.int32), got.masks.sum(0, dtype=np.int32)
        differ.append(float(np.mean(cover_a != cover_b)))
        if len(want) == len(got) and len(want):
            score_diff = max(score_diff, float(np.max(np.abs(want.scores - got.scores))))
    n = len(pairs)
    return {
        "identical_images": f"{same}/{n}", "identical": same == n,
        "pixels_differing": float(np.mean(differ)) if differ else 0.0, "max_score_difference": score_diff,
    }


def split_propose(
    proposers: dict[str, Any], images: Sequence[np.ndarray], warmup: Sequence[np.ndarray] = ()
) -> dict[str, Any]:
    """Propose every image with every engine, interleaved (the engine that goes first alternates per image),
    after ``warmup`` untimed images; per engine the seconds per image of each part and masks per image; with
    both engines the ratio fast/library per part and the agreement of their masks and scores."""
    order = [e for e in ENGINES if e in proposers]
    for image in warmup:
        for engine in order:
            proposers[engine].propose(image)
    sums = {e: dict.fromkeys((*PARTS, "total"), 0.0) for e in order}
    masks = dict.fromkeys(order, 0)
    pairs = []
    for i, image in enumerate(images):
        found = {}
        for engine in (order if i % 2 == 0 else order[::-1]):
            found[engine], parts = _timed(engine, proposers[engine], image)
            masks[engine] += len(found[engine])
            for k, v in parts.items():
                sums[engine][k] += v
        if len(order) == 2:
            pairs.append((found["library"], found["fast"]))
    n = max(len(images), 1)
    some = proposers[order[0]]
    report: dict[str, Any] = {
        "proposer": getattr(some, "name", None), "images": len(images), "warmup": len(warmup),
        "device": str(some.device),
        "engines": {e: {"seconds_per_image": {k: v / n for k, v in sums[e].items()},
                        "masks_per_image": masks[e] / n} for e in order},
    }
    if len(order) == 2:
        lib, fast = (report["engines"][e]["seconds_per_image"] for e in ENGINES)
        report["ratio_fast_over_library"] = {k: (fast[k] / lib[k] if lib[k] > 0 else None) for k in lib}
        report["agreement"] = agreement(pairs)
    return report


def split_markdown(split: dict[str, Any]) -> list[str]:
    """The split as lines of Markdown (``bench.md`` and the printed report)."""
    engines = split["engines"]
    lines = [
        "",
        f"Proposal stage, `{split['proposer']}` engine=library vs engine=fast ({split['images']} images "
        f"+{split['warmup']} warm-up, one model, interleaved; s/img):",
        "",
        "| engine | encoder | decoder | post-processing | total | masks/img |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for engine, row in engines.items():
        s = row["seconds_per_image"]
        cells = " | ".join(f"{s[k]:.3f}" for k in (*PARTS, "total"))
        lines.append(f"| {engine} | {cells} | {row['masks_per_image']:.1f} |")
    ratio = split.get("ratio_fast_over_library")
    if ratio:
        ratios = [f"{ratio[k]:.2f}" if ratio[k] is not None else "–" for k in (*PARTS, "total")]
        lines.append("| fast / library (time) | " + " | ".join(ratios) + " | |")
        agree = split["agreement"]
        lines.append("")
        if agree["identical"]:
            lines.append(f"Masks and scores identical on {agree['identical_images']} images.")
        else:
            lines.append(
                f"Masks and scores identical on {agree['identical_images']} images; "
                f"{100 * agree['pixels_differing']:.3f}% of pixels differ in mask coverage, "
                f"scores by at most {agree['max_score_difference']:.2e}."
            )
    return lines

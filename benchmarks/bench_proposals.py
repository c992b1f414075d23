"""Proposal stage: the libraries' automatic mask generators vs ``engine=fast``, side by side, same model.

SAM ViT-B (segment-anything) and SAM 2.1 hiera-tiny (sam2) with random weights (no checkpoints offline:
speed depends on the architecture, not the weights) at their native 1,024-pixel input with a 32×32 point
grid, on real coco-mini photos. Each image is proposed by both engines, interleaved, and the masks and
scores are checked to be identical before any time is printed. Two settings: the libraries' default
thresholds (random weights: no candidate passes them, so the time is the model and the filtering) and
thresholds at 0 (every candidate passes, then box NMS).

The library's time is split into its image encoder (``set_image``, timed by wrapping it) and the rest
(decoder + post-processing); ``engine=fast`` reports encoder, decoder and post-processing itself.

    .venv/bin/python benchmarks/bench_proposals.py --images 3
    .venv/bin/python benchmarks/bench_proposals.py --images 3 --device cuda --dtype bfloat16 --points-per-batch 1024
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from moduseg_core.io import read_image
from moduseg_core.plugins import build_options

SETTINGS = {
    "library defaults": {},
    "thresholds 0": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}


def build(name: str, engine: str, model: torch.nn.Module, args, values: dict):
    from moduseg_builtins.proposers._sam2_impl import Sam2Proposer
    from moduseg_builtins.proposers._sam_impl import SamProposer

    options = {"points_per_side": 32, "points_per_batch": args.points_per_batch, "device": args.device,
               "engine": engine, **values}
    if name == "sam2":
        options["dtype"] = args.dtype
    return (SamProposer if name == "sam" else Sam2Proposer)(build_options("proposer", name, options), model=model)


def timed_set_image(proposer) -> dict:
    """Wrap the library predictor's ``set_image`` so that its seconds are summed (the library's encoder)."""
    predictor = proposer.generator.predictor
    original = predictor.set_image
    spent = {"encoder": 0.0}

    def set_image(*a, **k):
        t0 = time.perf_counter()
        out = original(*a, **k)
        if proposer.device.type == "cuda":
            torch.cuda.synchronize(proposer.device)
        spent["encoder"] += time.perf_counter() - t0
        return out

    predictor.set_image = set_image
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco-mini"))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="sam2's dtype (sam runs float32)")
    parser.add_argument("--points-per-batch", type=int, default=64,
                        help="prompts per decoder call, both engines (the library's default 64: identical results)")
    parser.add_argument("--only", default="sam,sam2")
    args = parser.parse_args()

    from moduseg_builtins.proposers._sam2_impl import build_model
    from segment_anything import sam_model_registry

    ids = (args.data / "ImageSets/Segmentation/val.txt").read_text().split()[: args.images]
    images = [read_image(args.data / "JPEGImages" / f"{i}.jpg") for i in ids]
    torch.manual_seed(0)
    models = {"sam": lambda: sam_model_registry["vit_b"](), "sam2": lambda: build_model("configs/sam2.1/sam2.1_hiera_t.yaml", None)}
    print(f"{len(images)} coco-mini val images, 32×32 points, {args.points_per_batch} per decoder call, "
          f"device {args.device}, sam2 dtype {args.dtype}; random weights")
    print("| proposer | setting | engine | encoder s/img | decoder + post s/img | total s/img | masks/img | fast / library |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.only.split(","):
        model = models[name]()
        for label, values in SETTINGS.items():
            library = build(name, "library", model, args, values)
            fast = build(name, "fast", model, args, values)
            library.propose(images[0]), fast.propose(images[0])  # warm-up, untimed
            spent = timed_set_image(library)
            fast.fast.seconds = dict.fromkeys(fast.fast.seconds, 0.0)
            lib_total = fast_total = 0.0
            masks = 0
            for image in images:
                t0 = time.perf_counter()
                want = library.propose(image)
                t1 = time.perf_counter()
                got = fast.propose(image)
                t2 = time.perf_counter()
                assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores), (
                    f"{name} {label}: engine=fast differs from the library")
                lib_total += t1 - t0
                fast_total += t2 - t1
                masks += len(want)
            n = len(images)
            parts = fast.fast.seconds
            print(f"| {name} | {label} | library | {spent['encoder'] / n:.2f} | {(lib_total - spent['encoder']) / n:.2f} | "
                  f"{lib_total / n:.2f} | {masks / n:.1f} | |")
            print(f"| {name} | {label} | fast | {parts['encoder'] / n:.2f} | "
                  f"{(parts['decoder'] + parts['post-processing']) / n:.2f} (decoder {parts['decoder'] / n:.2f}, "
                  f"post {parts['post-processing'] / n:.2f}) | {fast_total / n:.2f} | {masks / n:.1f} | "
                  f"**{lib_total / fast_total:.1f}×** |")
    print("masks and scores identical for every image: yes")


if __name__ == "__main__":
    main()

"""Proposal stage: the libraries' automatic mask generators vs ``engine=fast``, side by side, same model.

SAM ViT-B (segment-anything) and SAM 2.1 hiera-tiny (sam2) with random weights (no checkpoints offline:
speed depends on the architecture, not the weights) at their native 1,024-pixel input with a 32×32 point
grid, on real coco-mini photos. Each image is proposed by both engines, interleaved; with
``--fast-decoder library`` the masks and scores are checked to be identical before any time is printed, with
the default ``factored`` decoder (equal up to float rounding) their agreement is printed and bounded. Two
settings: the libraries' default thresholds (random weights: no candidate passes them, so the time is the model
and the filtering) and thresholds at 0 (every candidate passes, then box NMS). ``--m2m``: SAM 2's mask-to-mask
refinement on both engines (``use_m2m=true``; sam2 only).

Both engines' time is split into encoder, decoder and post-processing by ``moduseg_core.bench.proposal_split``
(what ``moduseg bench --engines`` reports): the library's by wrapping ``set_image`` and hooking the prompt encoder
and mask decoder, ``engine=fast``'s from ``FastGenerator.seconds``; post-processing is the rest of ``propose``.

    .venv/bin/python benchmarks/bench_proposals.py --images 2 --settings "library defaults"
    .venv/bin/python benchmarks/bench_proposals.py --images 2 --fast-decoder library
    .venv/bin/python benchmarks/bench_proposals.py --images 3 --device cuda --dtype bfloat16 --points-per-batch 1024
    .venv/bin/python benchmarks/bench_proposals.py --images 1 --only sam2 --m2m --fast-decoder library
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from moduseg_core.bench.proposal_split import ENGINES, split_propose
from moduseg_core.contract.plugins import build_options
from moduseg_core.files.io import read_image

SETTINGS = {
    "library defaults": {},
    "thresholds 0": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}


def build(name: str, engine: str, model: torch.nn.Module, args, values: dict):
    from moduseg_builtins.proposers._sam2_impl import Sam2Proposer
    from moduseg_builtins.proposers._sam_impl import SamProposer

    options = {"points_per_side": 32, "points_per_batch": args.points_per_batch, "device": args.device,
               "engine": engine, "fast_decoder": args.fast_decoder, **values}
    if name == "sam2":
        options.update(dtype=args.dtype, use_m2m=args.m2m)
    return (SamProposer if name == "sam" else Sam2Proposer)(build_options("proposer", name, options), model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco-mini"))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="sam2's dtype (sam runs float32)")
    parser.add_argument("--points-per-batch", type=int, default=64,
                        help="prompts per decoder call, both engines (the library's default 64: identical results)")
    parser.add_argument("--only", default="sam,sam2")
    parser.add_argument(
        "--fast-decoder",
        default="factored",
        choices=["factored", "library"],
        help="engine=fast's decoder: factored (this script's default, the faster; equal up to rounding) or "
        "library (the proposers' default; identical)",
    )
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--m2m", action="store_true", help="SAM 2's mask-to-mask refinement (use_m2m=true; sam2 only)")
    args = parser.parse_args()
    if args.m2m and args.only != "sam2":
        parser.error(f"--m2m is SAM 2's use_m2m, not for --only {args.only}; pass --only sam2")
    chosen = [label.strip() for label in args.settings.split(",")]
    if unknown := [label for label in chosen if label not in SETTINGS]:
        parser.error(f"--settings {', '.join(unknown)}: not one of {', '.join(SETTINGS)}")

    from moduseg_builtins.proposers._sam2_impl import build_model
    from segment_anything import sam_model_registry

    ids = (args.data / "ImageSets/Segmentation/val.txt").read_text().split()[: args.images]
    images = [read_image(args.data / "JPEGImages" / f"{i}.jpg") for i in ids]
    torch.manual_seed(0)
    models = {
        "sam": lambda: sam_model_registry["vit_b"](),
        "sam2": lambda: build_model("configs/sam2.1/sam2.1_hiera_t.yaml", None),
    }
    print(f"{len(images)} coco-mini val images, 32×32 points, {args.points_per_batch} per decoder call, "
          f"device {args.device}, sam2 dtype {args.dtype}, fast_decoder {args.fast_decoder}, use_m2m {args.m2m}; "
          "random weights")
    print(
        "| proposer | setting | engine | encoder s/img | decoder s/img | post-processing s/img | total s/img | "
        "masks/img "
        "| library / fast (speed-up) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    notes = []
    for name in args.only.split(","):
        model = models[name]()
        for label in chosen:
            values = SETTINGS[label]
            proposers = {engine: build(name, engine, model, args, values) for engine in ENGINES}
            split = split_propose(proposers, images, warmup=images[:1])
            agree = split["agreement"]
            if args.fast_decoder == "library":
                assert agree["identical"], f"{name} {label}: engine=fast differs from the library: {agree}"
            else:  # the factored decoder: the same sums in another order
                assert agree["max_score_difference"] <= 1e-4 and agree["pixels_differing"] <= 1e-4, agree
            notes.append(
                f"{name} {label}: identical images {agree['identical_images']}, pixels differing "
                f"{100 * agree['pixels_differing']:.5f}%, largest score difference {agree['max_score_difference']:.1e}"
            )
            for engine, row in split["engines"].items():
                s = row["seconds_per_image"]
                ratio = f"**{1 / split['ratio_fast_over_library']['total']:.2f}×**" if engine == "fast" else ""
                print(f"| {name} | {label} | {engine} | {s['encoder']:.2f} | {s['decoder']:.2f} | "
                      f"{s['post-processing']:.2f} | {s['total']:.2f} | {row['masks_per_image']:.1f} | {ratio} |")
    print("\n".join(notes))


if __name__ == "__main__":
    main()

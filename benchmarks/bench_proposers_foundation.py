"""Seconds per image of the foundation-model proposers on real coco-mini photos, on this machine.

No pretrained weights for these models exist offline, so each proposer runs the real library
code on a random-initialised model: the small configs the tests use (a tiny ``Sam`` assembled from
segment_anything's modules at a 256-pixel input, SAM 2.1 hiera-tiny from sam2's own config at a
256-pixel input, tiny EoMT and Mask2Former configs saved and loaded by path) and, with ``--full``,
the real architectures at their real input size (SAM vit_b and SAM 2.1 hiera-tiny at 1024 pixels).
The score thresholds are 0, so every mask goes through the generators' whole post-processing;
random weights make noisy masks, which makes SAM's run-length encoding slower than real weights
would. The numbers are a CPU cost estimate, not a quality measure. Wall seconds depend on what else
the machine runs; "cpu s/img" (process CPU time, all threads) much less so. ``entityseg`` needs detectron2
(not installable here) and is not timed.

    .venv/bin/python benchmarks/bench_proposers_foundation.py --images 5
    .venv/bin/python benchmarks/bench_proposers_foundation.py --images 2 --full --only sam,sam2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import moduseg_core as ms
from moduseg_core.files.io import read_image

ROOT = Path(__file__).resolve().parents[1]


def tiny_sam(img_size: int = 256):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=2,
            mlp_ratio=4,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    ).eval()


def sam_proposer(points: int, full: bool):
    from moduseg_builtins.proposers._sam_impl import SamProposer
    from moduseg_builtins.proposers.sam import SamOptions
    from segment_anything import sam_model_registry

    options = SamOptions(
        model_type="vit_b", points_per_side=points, pred_iou_thresh=0.0, stability_score_thresh=0.0, device="cpu"
    )
    model = sam_model_registry["vit_b"]() if full else tiny_sam()
    return SamProposer(options, model=model)


def sam2_proposer(points: int, full: bool):
    return ms.get_component(
        "proposer",
        "sam2",
        model="random",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        image_size=None if full else 256,
        points_per_side=points,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        device="cpu",
    )


def eomt_proposer(tmp: Path):
    import transformers

    config = transformers.EomtConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=160,
        patch_size=16,
        num_queries=16,
        num_blocks=2,
        num_register_tokens=2,
        num_labels=7,
    )
    transformers.EomtForUniversalSegmentation(config).save_pretrained(tmp / "eomt")
    return ms.get_component("proposer", "eomt", model=str(tmp / "eomt"), score_threshold=0.0, device="cpu")


def mask2former_proposer(tmp: Path):
    import transformers

    backbone = transformers.SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=12,
        dim_feedforward=64,
        encoder_feedforward_dim=64,
        num_attention_heads=2,
        num_labels=9,
    )
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp / "m2f")
    return ms.get_component(
        "proposer",
        "mask2former",
        model=str(tmp / "m2f"),
        score_threshold=0.0,
        shortest_edge=384,
        longest_edge=640,
        device="cpu",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--points", type=int, default=8, help="points_per_side for sam / sam2")
    parser.add_argument(
        "--full", action="store_true", help="also the real architectures at 1024 px (about a minute per image)"
    )
    parser.add_argument("--only", default="sam,sam2,eomt,mask2former")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    ids = (args.data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[: args.images]
    images = [read_image(args.data / "JPEGImages" / f"{i}.jpg") for i in ids]
    wanted = args.only.split(",")
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, {len(images)} images "
        f"({', '.join(f'{im.shape[1]}×{im.shape[0]}' for im in images)})"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        runs = []
        if "sam" in wanted:
            runs.append(
                (
                    f"sam tiny ViT (64-d, 2 blocks) 256 px, {args.points}² points",
                    lambda: sam_proposer(args.points, False),
                )
            )
            if args.full:
                runs.append((f"sam vit_b 1024 px, {args.points}² points", lambda: sam_proposer(args.points, True)))
        if "sam2" in wanted:
            runs.append((f"sam2.1 hiera-t 256 px, {args.points}² points", lambda: sam2_proposer(args.points, False)))
            if args.full:
                runs.append(
                    (f"sam2.1 hiera-t 1024 px, {args.points}² points", lambda: sam2_proposer(args.points, True))
                )
        if "eomt" in wanted:
            runs.append(("eomt tiny (64-d, 4 blocks, 16 queries) 160 px", lambda: eomt_proposer(tmp)))
        if "mask2former" in wanted:
            runs.append(("mask2former tiny (Swin 16-d, 12 queries) 384/640 px", lambda: mask2former_proposer(tmp)))
        print(
            f"{'proposer (random weights)':<52} {'build s':>8} {'s/image':>8} {'min':>6} {'max':>6} "
            f"{'cpu s/img':>9} {'masks/img':>9}"
        )
        for label, make in runs:
            t0 = time.perf_counter()
            proposer = make()
            build = time.perf_counter() - t0
            proposer.propose(images[0])  # warm-up (lazy init, allocator)
            seconds, cpu, counts = [], [], []
            for image in images:
                t0, c0 = time.perf_counter(), time.process_time()
                proposals = proposer.propose(image)
                seconds.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                counts.append(len(proposals))
            print(
                f"{label:<52} {build:8.2f} {statistics.mean(seconds):8.2f} {min(seconds):6.2f} {max(seconds):6.2f} "
                f"{statistics.mean(cpu):9.2f} {statistics.mean(counts):9.1f}"
            )

if __name__ == "__main__":
    main()

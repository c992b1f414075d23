"""Random-weight checkpoints of the published architectures, for speed runs where no hub is reachable.

`moduseg bench` measures speed, and speed depends on the architecture, not the weights. This
writes checkpoints the plugins load exactly as they load the released ones:

* ``sam_vit_h_random.pth`` — segment_anything's ViT-H (``--set proposer.checkpoint=...``);
* ``eomt-large-640/`` — EoMT-L at 640 px in the hub's folder layout (``--set proposer.model=...``).

SAM 2 and DINOv2 need no file: ``--set proposer.model=random --set proposer.config=sam2.1_hiera_l``
and ``--set encoder.model=random:facebook/dinov2-large``. Random weights change how many masks
a proposer returns; the bench reports masks per image.

    python benchmarks/random_checkpoints.py --out /tmp/random-ckpt [--sam vit_h] [--eomt]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def sam_checkpoint(out: Path, model_type: str) -> Path:
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = out / f"sam_{model_type}_random.pth"
    torch.save(sam_model_registry[model_type]().state_dict(), path)
    return path


def eomt_folder(out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    # EomtConfig's defaults are EoMT-L (1024 wide, 24 blocks, 16 heads, patch 16, 640 px, 200 queries).
    config = transformers.EomtConfig(num_labels=133)
    path = out / "eomt-large-640"
    transformers.EomtForUniversalSegmentation(config).save_pretrained(path)
    size = config.image_size
    transformers.EomtImageProcessor(size={"shortest_edge": size, "longest_edge": size}, do_pad=True).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sam", default="vit_h", help="segment_anything model type, or 'none'")
    parser.add_argument("--eomt", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sam != "none":
        print(f"sam: {sam_checkpoint(args.out, args.sam)}")
    if args.eomt:
        print(f"eomt: {eomt_folder(args.out)}")


if __name__ == "__main__":
    main()

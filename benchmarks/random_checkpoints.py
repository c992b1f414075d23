"""Random-weight checkpoints of the published architectures, for speed runs where no hub is reachable.

`moduseg bench` and `benchmarks/gpu_check.py` measure speed, and speed depends on the
architecture, not the weights. This writes checkpoints the plugins load exactly as they load
the released ones (the library's own writers, the hub's folder layouts):

* ``sam_vit_h_random.pth`` — segment_anything's ViT-H (``--set proposer.checkpoint=...``);
* ``eomt-large-640/`` — EoMT-L at 640 px (``--set proposer.model=...``);
* ``mask2former-swin-large/`` — Mask2Former with the Swin-L backbone, 200 queries, 133 classes
  (COCO panoptic's shape; ``--set proposer.model=...``);
* ``dinov3-vitl16/`` — DINOv3 ViT-L/16 with 4 registers (``--encoder dinov3 --set encoder.model=...``);
* ``siglip-base-patch16-224/`` — SigLIP B/16 (``--encoder siglip --set encoder.model=...``);
* ``clip-vit-b-16/`` — open_clip ViT-B-16 in the ``local-dir:`` layout (``--set encoder.model=local-dir:...``).

SAM 2 and DINOv2 need no file: ``--set proposer.model=random --set proposer.config=sam2.1_hiera_l``
and ``--set encoder.model=random:facebook/dinov2-large``. Random weights change how many masks
a proposer returns; the bench reports masks per image.

    python benchmarks/random_checkpoints.py --out /tmp/random-ckpt [--sam vit_h] [--only eomt,dinov3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ALL = ("sam", "eomt", "mask2former", "dinov3", "siglip", "clip")


def sam_checkpoint(out: Path, model_type: str = "vit_h") -> Path:
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
    transformers.EomtImageProcessor(size={"shortest_edge": size, "longest_edge": size}, do_pad=True).save_pretrained(
        path
    )
    return path


def mask2former_folder(out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    # facebook/mask2former-swin-large-coco-panoptic: Swin-L (192 wide, 2-2-18-2 blocks, window 12), 200 queries
    swin = transformers.SwinConfig(
        embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(backbone_config=swin, num_queries=200, num_labels=133)
    path = out / "mask2former-swin-large"
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    return path


def dinov3_folder(out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    # facebook/dinov3-vitl16-pretrain-lvd1689m: 1024 wide, 24 blocks, 16 heads, 4 registers, patch 16
    config = transformers.DINOv3ViTConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
        num_register_tokens=4, layerscale_value=1.0,
    )
    path = out / "dinov3-vitl16"
    transformers.DINOv3ViTModel(config).save_pretrained(path)
    return path


def siglip_folder(out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    # google/siglip-base-patch16-224: the vision tower is what the encoder reads
    config = transformers.SiglipVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16,
        image_size=224,
    )
    path = out / "siglip-base-patch16-224"
    transformers.SiglipVisionModel(config).save_pretrained(path)
    return path


def clip_folder(out: Path, architecture: str = "ViT-B-16") -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model_cfg = open_clip.get_model_config(architecture)
    model = open_clip.CLIP(**model_cfg)
    path = out / f"clip-{architecture.lower()}"
    path.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return path


def write(out: Path, which: str, sam_type: str = "vit_h") -> Path:
    """One of ``ALL`` into ``out``; returns what to point the plugin at."""
    out.mkdir(parents=True, exist_ok=True)
    if which == "sam":
        return sam_checkpoint(out, sam_type)
    return {"eomt": eomt_folder, "mask2former": mask2former_folder, "dinov3": dinov3_folder,
            "siglip": siglip_folder, "clip": clip_folder}[which](out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sam", default="vit_h", help="segment_anything model type")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    args = parser.parse_args()
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(ALL)}")
    for which in wanted:
        print(f"{which}: {write(args.out, which, args.sam)}")


if __name__ == "__main__":
    main()

"""Offline builders for tests/test_contract.py: one per registered component, each making the real
component from local files (tiny random checkpoints of the real model classes, coco-mini data laid out
as the component expects). Not a test module.

``BUILDERS[(kind, name)](ctx)`` returns the component. ``REFUSALS[(kind, name)]`` documents a component
that cannot be built offline here: the regex its one-line ModusegError must match (the contract
test then asserts that refusal, and still runs the protocol through ``REFUSAL_FALLBACKS`` where the
component's documented call interface can be driven without the missing package).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import moduseg_core as ms
from moduseg_core.contract.plugins import build_options
from moduseg_core.contract.types import Proposals, Sample
from moduseg_core.files.io import read_image, read_mask

VOC = {"mask_dir": "SegmentationClassVOC", "labels_file": "image_labels_voc.json"}


@dataclass
class Context:
    """What builders share: the data root, a private folder, checkpoints made once on first use."""

    coco_mini: Path
    work: Path
    made: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, make: Callable[[Path], Any]) -> Any:
        if key not in self.made:
            folder = self.work / key
            folder.mkdir(parents=True, exist_ok=True)
            self.made[key] = make(folder)
        return self.made[key]

    @cached_property
    def samples(self) -> list[Sample]:
        """coco-mini val samples with VOC classes, those with two or more labels first."""
        ds = ms.get_component("dataset", "voc", root=self.coco_mini, split="val", **VOC)
        items = list(ds)
        return sorted(items, key=lambda s: -min(len(s.labels), 2))

    @cached_property
    def sample(self) -> Sample:
        return self.samples[0]

    @cached_property
    def image(self) -> np.ndarray:
        """One real coco-mini photo at half size (the cost of every model grows with the pixels)."""
        from PIL import Image

        full = Image.fromarray(read_image(self.sample.image_path))
        return np.asarray(full.resize((full.width // 2, full.height // 2), Image.BILINEAR))

    @cached_property
    def full_image(self) -> np.ndarray:
        return read_image(self.sample.image_path)

    @cached_property
    def gt(self) -> np.ndarray:
        return read_mask(self.sample.mask_path)


# -- datasets --------------------------------------------------------------------------------------------


def _coco_layout(ctx: Context, root: Path) -> Path:
    """coco-mini's first val images copied into the COCO-2014 layout (images/val2014, SegmentationClass/val2014)."""
    (root / "images" / "val2014").mkdir(parents=True)
    (root / "SegmentationClass" / "val2014").mkdir(parents=True)
    ids = (ctx.coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:3]
    for i in ids:
        shutil.copy(ctx.coco_mini / "JPEGImages" / f"{i}.jpg", root / "images" / "val2014")
        shutil.copy(ctx.coco_mini / "SegmentationClass" / f"{i}.png", root / "SegmentationClass" / "val2014")
    return root


def _folder_layout(ctx: Context, root: Path) -> Path:
    """A plain folder: images/ and masks/ (labels derived from the masks, VOC classes)."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for s in ctx.samples[:3]:
        shutil.copy(s.image_path, root / "images")
        shutil.copy(s.mask_path, root / "masks")
    return root


def _prepared(ctx: Context, root: Path, name: str) -> Path:
    """A fixture in ADE20K's / Cityscapes' official layout (tests/scene_fixtures.py), through `moduseg prepare`."""
    import scene_fixtures

    from moduseg_core.prepare.ade20k import prepare_ade20k
    from moduseg_core.prepare.cityscapes import prepare_cityscapes

    if name == "ade20k":
        prepare_ade20k(scene_fixtures.make_ade20k(ctx.coco_mini, root / "raw"), root / "prepared")
    else:
        prepare_cityscapes(scene_fixtures.make_cityscapes(ctx.coco_mini, root / "raw"), root / "prepared")
    return root / "prepared"


# -- labelers ----------------------------------------------------------------------------------------------

#: open_clip's tokenizer needs the real vocabulary and context; everything else is tiny
CLIP_LABELER_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def save_clip_labeler(folder: Path) -> Path:
    """A random open_clip.CLIP with a tokenizer-sized text tower, in the ``local-dir:`` layout."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.CLIP(**CLIP_LABELER_CFG)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    preprocess = {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": CLIP_LABELER_CFG, "preprocess_cfg": preprocess})
    )
    return folder


#: corrclip needs a vision tower of at least 3 blocks (its spatial branch averages the lower ones)
CORRCLIP_CLIP_CFG = {**CLIP_LABELER_CFG, "vision_cfg": {**CLIP_LABELER_CFG["vision_cfg"], "layers": 4}}


def save_corrclip_models(folder: Path) -> tuple[Path, Path]:
    """A random open_clip.CLIP (4 vision blocks) in the ``local-dir:`` layout and a random DINO-style
    transformers ViTModel (patch 8), saved as the hub lays it out: ``(clip folder, dino folder)``."""
    import open_clip
    import torch
    import transformers

    clip, dino = folder / "clip", folder / "dino"
    clip.mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**CORRCLIP_CLIP_CFG).state_dict(), clip / "open_clip_pytorch_model.bin")
    preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (clip / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": CORRCLIP_CLIP_CFG, "preprocess_cfg": preprocess})
    )
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8, image_size=64
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(dino)
    return clip, dino


def _corrclip(ctx: Context):
    clip, dino = ctx.once("corrclip-models", save_corrclip_models)
    return ms.get_component(
        "labeler", "corrclip", model=f"local-dir:{clip}", pretrained=None, dino=str(dino), proposer="slic",
        proposer_options={"n_segments": [12]}, device="cpu", templates=["a photo of a {}."], short_side=112, crop=112,
        stride=56,
    )


def _precomputed_masks(ctx: Context, root: Path) -> Path:
    """The sample's ground truth written as a released pseudo mask."""
    shutil.copy(ctx.sample.mask_path, root / f"{ctx.sample.id}.png")
    return root


def _coseg(ctx: Context):
    dinov2 = ctx.once("dinov2", _save_dinov2)
    labeler = ms.get_component(
        "labeler",
        "coseg",
        proposer_options={"n_segments": [10, 20], "max_side": 96},
        encoder_options={"model": str(dinov2), "layers": [3], "resize": 112, "device": "cpu"},
        iterations=2,
    )
    labeler.fit(ctx.samples[:4])  # the bank split it co-segments (the contract's sample among them)
    return labeler


# -- proposers ---------------------------------------------------------------------------------------------


def _precomputed_proposals(ctx: Context, root: Path) -> Path:
    """One mask per GT class region of the sample, saved in the documented ``precomputed`` format."""
    from moduseg_builtins.proposers.precomputed import save_proposals

    values = [v for v in np.unique(ctx.gt) if v not in (0, 255)]
    masks = np.stack([ctx.gt == v for v in values])
    save_proposals(
        root / f"{ctx.sample.id}.npz", Proposals(masks, np.linspace(0.9, 0.3, len(values)).astype(np.float32))
    )
    return root


def save_eomt(folder: Path, size: int = 160) -> Path:
    """A random EoMT saved with save_pretrained beside its image processor (the hub's layout)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.EomtConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=2, image_size=size, patch_size=16,
        num_queries=16, num_blocks=2, num_register_tokens=2, num_labels=7,
    )
    transformers.EomtForUniversalSegmentation(config).save_pretrained(folder)
    transformers.EomtImageProcessor(size={"shortest_edge": size, "longest_edge": size}, do_pad=True).save_pretrained(
        folder
    )
    return folder


def save_mask2former(folder: Path) -> Path:
    """A random Mask2Former (Swin backbone) whose processor resizes to 128 / 200."""
    import torch
    import transformers

    torch.manual_seed(0)
    backbone = transformers.SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_layers=1,
        decoder_layers=2, num_queries=12, dim_feedforward=64, encoder_feedforward_dim=64, num_attention_heads=2,
        num_labels=9,
    )
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    transformers.Mask2FormerImageProcessor(
        size={"shortest_edge": 128, "longest_edge": 200}, size_divisor=32
    ).save_pretrained(folder)
    return folder


def _sam(ctx: Context):
    """segment_anything's real generator over its real Sam class at a tiny width and a 256-pixel input
    (model_type only offers the released vit_b/l/h, a minute per image on a CPU)."""
    from moduseg_builtins.proposers._sam_impl import SamProposer
    from test_proposer_sam import tiny_sam

    options = build_options(
        "proposer",
        "sam",
        {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "device": "cpu"},
    )
    return SamProposer(options, model=tiny_sam())


def _entityseg_standin(ctx: Context):
    """The registered factory driven through detectron2's documented predictor interface
    (tests/entityseg_standin.py)."""
    from moduseg_core.contract.plugins import get_spec

    spec = get_spec("proposer", "entityseg")
    return spec.factory(build_options("proposer", "entityseg", {"predictor": "entityseg_standin:make_predictor"}))


# -- encoders ----------------------------------------------------------------------------------------------


def _save_dinov2(folder: Path) -> Path:
    import encoder_checkpoints as ec

    ec.save_dinov2(folder, registers=4)
    return folder


def _encoder_sources(ctx: Context, name: str) -> dict[str, Any]:
    import encoder_checkpoints as ec

    if name == "dinov2":
        return {"model": str(ctx.once("dinov2", _save_dinov2))}
    if name == "dinov3":
        return {"model": str(ctx.once("dinov3", lambda d: (ec.save_dinov3(d), d)[1]))}
    if name == "siglip":
        return {"model": str(ctx.once("siglip", lambda d: (ec.save_siglip(d), d)[1]))}
    if name == "clip":
        return {"model": "local-dir:" + str(ctx.once("clip-encoder", lambda d: (ec.save_clip(d), d)[1]))}
    if name == "radio":
        hub = ctx.once("radio-hub", lambda d: (ec.save_radio_hub(d, version="c-radio_v4-so400m"), d)[1])
        return {"model": "c-radio_v4-so400m", "hub_repo": str(hub)}
    raise KeyError(name)


def _encoder(name: str) -> Callable[[Context], Any]:
    return lambda ctx: ms.get_component("encoder", name, device="cpu", **_encoder_sources(ctx, name))


# -- the table -----------------------------------------------------------------------------------------------

BUILDERS: dict[tuple[str, str], Callable[[Context], Any]] = {
    ("dataset", "voc"): lambda ctx: ms.get_component("dataset", "voc", root=ctx.coco_mini, split="val", **VOC),
    ("dataset", "coco"): lambda ctx: ms.get_component(
        "dataset", "coco", root=ctx.once("coco-layout", lambda d: _coco_layout(ctx, d)), split="val"
    ),
    ("dataset", "folder"): lambda ctx: ms.get_component(
        "dataset", "folder", root=ctx.once("folder-layout", lambda d: _folder_layout(ctx, d))
    ),
    ("dataset", "ade20k"): lambda ctx: ms.get_component(
        "dataset", "ade20k", root=ctx.once("ade20k-layout", lambda d: _prepared(ctx, d, "ade20k")), split="val"
    ),
    ("dataset", "cityscapes"): lambda ctx: ms.get_component(
        "dataset",
        "cityscapes",
        root=ctx.once("cityscapes-layout", lambda d: _prepared(ctx, d, "cityscapes")),
        split="val",
    ),
    ("labeler", "gt"): lambda ctx: ms.get_component("labeler", "gt"),
    ("labeler", "precomputed"): lambda ctx: ms.get_component(
        "labeler", "precomputed", root=ctx.once("pseudo-masks", lambda d: _precomputed_masks(ctx, d))
    ),
    ("labeler", "clip"): lambda ctx: ms.get_component(
        "labeler",
        "clip",
        model="local-dir:" + str(ctx.once("clip-labeler", save_clip_labeler)),
        device="cpu",
        templates=["a photo of a {}."],
        crop=64,
        stride=32,
        short_side=96,
    ),
    ("labeler", "coseg"): _coseg,
    ("labeler", "corrclip"): _corrclip,
    ("proposer", "felzenszwalb"): lambda ctx: ms.get_component("proposer", "felzenszwalb"),
    ("proposer", "slic"): lambda ctx: ms.get_component("proposer", "slic"),
    ("proposer", "grid"): lambda ctx: ms.get_component("proposer", "grid"),
    ("proposer", "precomputed"): lambda ctx: ms.get_component(
        "proposer", "precomputed", root=ctx.once("proposals", lambda d: _precomputed_proposals(ctx, d))
    ),
    ("proposer", "eomt"): lambda ctx: ms.get_component(
        "proposer", "eomt", model=str(ctx.once("eomt", save_eomt)), score_threshold=0.0, device="cpu"
    ),
    ("proposer", "mask2former"): lambda ctx: ms.get_component(
        "proposer",
        "mask2former",
        model=str(ctx.once("mask2former", save_mask2former)),
        score_threshold=0.0,
        device="cpu",
    ),
    ("proposer", "sam"): _sam,
    ("proposer", "sam2"): lambda ctx: ms.get_component(
        "proposer",
        "sam2",
        model="random",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        image_size=256,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        device="cpu",
    ),
    ("purifier", "erode"): lambda ctx: ms.get_component("purifier", "erode", iterations=3),
    ("purifier", "none"): lambda ctx: ms.get_component("purifier", "none"),
    **{("encoder", n): _encoder(n) for n in ("dinov2", "dinov3", "siglip", "clip", "radio")},
    ("aggregator", "soft"): lambda ctx: ms.get_component("aggregator", "soft"),
    ("aggregator", "hard"): lambda ctx: ms.get_component("aggregator", "hard"),
    ("index", "exact"): lambda ctx: ms.get_component("index", "exact"),
    ("index", "faiss"): lambda ctx: ms.get_component("index", "faiss"),
    ("index", "hnswlib"): lambda ctx: ms.get_component("index", "hnswlib"),
}

#: Components whose build needs a package that cannot be installed from PyPI here: the one-line
#: refusal they must give (matched as a regex), while the package is missing.
REFUSALS: dict[tuple[str, str], tuple[str, str]] = {
    # (the module whose absence causes the refusal, what the message must say)
    ("proposer", "entityseg"): ("detectron2", r"needs detectron2.*docs/proposers\.md"),
}

#: For refused components: the registered factory driven through the documented call interface
#: without the missing package, so the protocol is still checked on a real image.
REFUSAL_FALLBACKS: dict[tuple[str, str], Callable[[Context], Any]] = {
    ("proposer", "entityseg"): _entityseg_standin,
}

#: What building needs that a bare install may lack (an importable module per component, pip names it).
NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("labeler", "clip"): ("torch", "open_clip"),
    ("labeler", "coseg"): ("torch", "transformers", "skimage"),  # slic regions, a tiny dinov2
    ("labeler", "corrclip"): ("torch", "open_clip", "transformers", "sklearn", "skimage"),  # slic masks
    ("proposer", "felzenszwalb"): ("skimage",),
    ("proposer", "slic"): ("skimage",),
    ("proposer", "eomt"): ("torch", "transformers"),
    ("proposer", "mask2former"): ("torch", "transformers"),
    ("proposer", "sam"): ("torch", "segment_anything"),
    ("proposer", "sam2"): ("torch", "sam2", "hydra"),
    ("proposer", "entityseg"): ("torch",),
    **{("encoder", n): ("torch", "transformers") for n in ("dinov2", "dinov3", "siglip")},
    ("encoder", "clip"): ("torch", "open_clip"),
    ("encoder", "radio"): ("torch", "timm", "einops"),
    ("index", "faiss"): ("faiss",),
    ("index", "hnswlib"): ("hnswlib",),
}


def missing(key: tuple[str, str]) -> list[str]:
    return [m for m in NEEDS.get(key, ()) if importlib.util.find_spec(m) is None]

"""Proposers: class-agnostic masks with a confidence (METHOD.md, inference step 1).

This package is the ``proposers`` entry point: it registers every built-in proposer. Registering
imports only the light modules (options, numpy); the factories import torch, transformers,
segment_anything, sam2 or detectron2 when a proposer is built.

- ``skimage``: ``slic`` and ``felzenszwalb`` superpixels (numpy + scikit-image);
- ``precomputed``: masks read from disk, and the proposal file format;
- ``sam`` / ``sam2``: Segment Anything's automatic mask generators (``_sam_impl``, ``_sam2_impl``);
- ``transformers_universal``: ``eomt`` and ``mask2former`` (``_universal_impl``);
- ``entityseg``: the paper's EntitySeg / CropFormer proposer on detectron2 (``_entityseg_impl``);
- ``_common`` (light option fields) and ``_torch_common`` (torch helpers) serve the model-backed ones.
"""

from __future__ import annotations

from moduseg_core import hookimpl

from .entityseg import DEFAULT_WEIGHTS_NAME, DETECTRON2_INSTALL, EntitySegOptions
from .precomputed import PrecomputedProposer, PrecomputedProposerOptions
from .sam import SamOptions
from .sam2 import Sam2Options
from .skimage import FelzenszwalbOptions, FelzenszwalbProposer, SlicOptions, SlicProposer
from .transformers_universal import EomtOptions, Mask2FormerOptions


def make_sam(options: SamOptions):
    from ._sam_impl import SamProposer

    return SamProposer(options)


def make_sam2(options: Sam2Options):
    from ._sam2_impl import Sam2Proposer

    return Sam2Proposer(options)


def make_eomt(options: EomtOptions):
    from ._universal_impl import UniversalProposer

    return UniversalProposer(options, "eomt")


def make_mask2former(options: Mask2FormerOptions):
    from ._universal_impl import UniversalProposer

    return UniversalProposer(options, "mask2former")


def make_entityseg(options: EntitySegOptions):
    from ._entityseg_impl import EntitySegProposer

    return EntitySegProposer(options)


@hookimpl
def register_proposers(register):
    register(
        "slic",
        SlicProposer,
        options=SlicOptions,
        summary="SLIC superpixels at several segment counts (class-agnostic, overlapping scales)",
        extra="skimage",
        requires=("skimage",),
    )
    register(
        "felzenszwalb",
        FelzenszwalbProposer,
        options=FelzenszwalbOptions,
        summary="Felzenszwalb graph segments at several scales (class-agnostic, overlapping scales)",
        extra="skimage",
        requires=("skimage",),
    )
    register(
        "precomputed",
        PrecomputedProposer,
        options=PrecomputedProposerOptions,
        summary="Masks read from {root}/{id}.npz (bool or packed, with scores) or {id}.png instance maps",
    )
    register(
        "sam",
        make_sam,
        options=SamOptions,
        summary="Segment Anything automatic masks (vit_b/l/h); score = predicted IoU",
        extra="sam",
        requires=("torch", "torchvision", "segment_anything"),
        weights="Meta's SAM checkpoints (downloaded once into the torch hub cache), a local .pth, or a URL",
    )
    register(
        "sam2",
        make_sam2,
        options=Sam2Options,
        summary="SAM 2 / 2.1 automatic masks (hiera tiny..large); score = predicted IoU",
        extra="sam2",
        requires=("torch", "torchvision", "sam2", "hydra"),
        weights="Hugging Face hub (facebook/sam2-hiera-*, facebook/sam2.1-hiera-*) or a local .pt checkpoint",
    )
    register(
        "eomt",
        make_eomt,
        options=EomtOptions,
        summary="EoMT queries as class-agnostic masks (HF transformers); score = class prob × mask prob ≥ 0.6",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (tue-mps/*_eomt_*) or a local checkpoint dir",
    )
    register(
        "mask2former",
        make_mask2former,
        options=Mask2FormerOptions,
        summary="Mask2Former queries as class-agnostic masks (HF transformers); score = class prob × mask prob ≥ 0.6",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (facebook/mask2former-*) or a local checkpoint dir",
    )
    register(
        "entityseg",
        make_entityseg,
        options=EntitySegOptions,
        summary=(
            "EntitySeg/CropFormer entity masks, the paper's proposer (detectron2 + CropFormer from source: "
            "docs/proposers.md)"
        ),
        requires=("detectron2",),
        install=f"{DETECTRON2_INSTALL}, then CropFormer (docs/proposers.md, docs/paper.md)",
        weights=(
            f"local CropFormer/EntitySeg checkpoint ({DEFAULT_WEIGHTS_NAME}, Hugging Face dataset "
            "qqlu1992/Adobe_EntitySeg)"
        ),
    )

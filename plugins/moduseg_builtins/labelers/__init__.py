"""Labelers: image + image-level labels → class map ``H×W`` (METHOD.md, bank step 1).

This package is the ``labelers`` entry point: it registers every built-in labeler. Registering
imports only the light modules (options, numpy, pillow); the ``clip`` factory imports torch and
open_clip, the ``coseg`` factory builds its proposer and encoder, when a labeler is built.

- ``files``: ``gt`` (the ground-truth mask, an oracle) and ``precomputed`` (pseudo masks on disk);
- ``clip``: dense CLIP logits (the paper's kind of labeler): options here, model code in
  ``_clip_impl``, prompt words in ``_clip_text``;
- ``corrclip``: the paper's labeler (CLIP with DINO correlations and masks): options here, the model
  code in ``_corrclip_impl``, its pieces as small tensor functions in ``_corrclip_parts``;
- ``coseg``: vision-only co-segmentation over the bank split: options here, the rule in ``_coseg_impl``;
- ``_common``: what the labelers share (parts built from their own options, label checks, map correction).
"""

from __future__ import annotations

from moduseg_core import ModusegError, NoOptions, hookimpl

from .clip import ClipLabelerOptions
from .corrclip import CorrClipLabelerOptions
from .coseg import CosegLabelerOptions
from .files import GTLabeler, PrecomputedLabeler, PrecomputedLabelerOptions


def make_clip(options: ClipLabelerOptions):
    if options.stride > options.crop:
        raise ModusegError(
            f"labeler 'clip' option stride={options.stride} exceeds crop={options.crop}, so windows would leave "
            "gaps; set --set labeler.stride to at most the crop"
        )
    from ._clip_impl import ClipLabeler

    return ClipLabeler(options)


def make_corrclip(options: CorrClipLabelerOptions):
    if options.stride > options.crop:
        raise ModusegError(
            f"labeler 'corrclip' option stride={options.stride} exceeds crop={options.crop}, so windows would leave "
            "gaps; set --set labeler.stride to at most the crop"
        )
    from ._corrclip_impl import CorrClipLabeler

    return CorrClipLabeler(options)


def make_coseg(options: CosegLabelerOptions):
    from ._coseg_impl import CosegLabeler

    return CosegLabeler(options)


@hookimpl
def register_labelers(register):
    register(
        "gt",
        lambda options: GTLabeler(),
        options=NoOptions,
        summary="ORACLE: the ground-truth mask (upper bound, not weak supervision)",
        oracle=True,
    )
    register(
        "precomputed",
        PrecomputedLabeler,
        options=PrecomputedLabelerOptions,
        summary="Pseudo masks read from {root}/{id}.png (e.g. released CorrCLIP masks)",
    )
    register(
        "clip",
        make_clip,
        options=ClipLabelerOptions,
        summary="Dense CLIP logits for the image's labels vs stuff words, sliding windows (the paper's kind)",
        extra="clip",
        requires=("torch", "open_clip"),
        weights="open_clip pretrained tags (default ViT-B-16 metaclip_fullcc), hf-hub: or local-dir: checkpoints",
    )
    register(
        "corrclip",
        make_corrclip,
        options=CorrClipLabelerOptions,
        summary="The paper's labeler: CLIP's last block rebuilt from DINO correlations and merged masks "
        "(three branches), restricted to the image's labels, corrected by the masks",
        extra="corrclip",
        requires=("torch", "open_clip", "transformers", "sklearn"),
        weights="open_clip tags (default ViT-B-16 metaclip_fullcc) + a transformers ViT (facebook/dino-vitb8)",
    )
    register(
        "coseg",
        make_coseg,
        options=CosegLabelerOptions,
        summary="Vision only: regions named by class prototypes of the other images that share the label, "
        "border-seeded background, iterated over the bank split (no text model)",
    )

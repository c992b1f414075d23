"""The ``dinov3`` encoder: DINOv3 ViT patch tokens through Hugging Face ``transformers``.

Light entry point (options + registration); the model code is in ``_dinov3_impl``.
"""

from __future__ import annotations

from pydantic import Field

from moduseg_core import hookimpl

from ._vit_options import ViTEncoderOptions


class Dinov3Options(ViTEncoderOptions):
    model: str = Field(
        "facebook/dinov3-vits16-pretrain-lvd1689m",
        description=(
            "Hugging Face hub id (facebook/dinov3-vit{s16,s16plus,b16,l16,h16plus,7b16}-pretrain-lvd1689m; gated: "
            "accept the licence on the hub first) or a local checkpoint directory"
        ),
    )


def _build(options: Dinov3Options):
    from ._dinov3_impl import Dinov3Encoder

    return Dinov3Encoder(options)


@hookimpl
def register_encoders(register):
    register(
        "dinov3",
        _build,
        options=Dinov3Options,
        summary="DINOv3 ViT patch tokens (HF transformers, patch 16, register tokens), native size zero-padded",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (facebook/dinov3-vit*16*-pretrain-*, gated) or a local checkpoint dir",
    )

"""The ``dinov3`` encoder: DINOv3 ViT patch tokens through Hugging Face ``transformers``.

Light: the options (``moduseg_builtins.encoders`` registers them); the model code is in ``_dinov3_impl``.
"""

from __future__ import annotations

from pydantic import Field

from ._vit_options import ViTEncoderOptions


class Dinov3Options(ViTEncoderOptions):
    model: str = Field(
        "facebook/dinov3-vits16-pretrain-lvd1689m",
        description=(
            "Hugging Face hub id (facebook/dinov3-vit{s16,s16plus,b16,l16,h16plus,7b16}-pretrain-lvd1689m; gated: "
            "accept the licence on the hub first) or a local checkpoint directory"
        ),
    )

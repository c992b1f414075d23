"""The ``clip`` encoder: dense patch tokens of an open_clip vision transformer.

Light: the options (``moduseg_builtins.encoders`` registers them); the model code is in ``_clip_impl``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ._vit_options import ViTEncoderOptions


class ClipOptions(ViTEncoderOptions):
    model: str = Field(
        "ViT-B-16",
        description=(
            "open_clip architecture (ViT-B-16, ViT-L-14...; see open_clip.list_models()), "
            "or hf-hub:ORG/REPO / local-dir:PATH (config and weights together; `pretrained` is then ignored)"
        ),
    )
    pretrained: str | None = Field(
        "metaclip_fullcc",
        description=(
            "open_clip pretrained tag of `model` (metaclip_fullcc = the paper's MetaCLIP labeler weights, openai, "
            "laion2b_s34b_b88k...) or a checkpoint file; None only with hf-hub:/local-dir: models"
        ),
    )
    project: bool = Field(
        False,
        description="multiply the tokens by the visual projection (joint image-text space, e.g. 512-d) instead of "
        "returning the transformer width (e.g. 768-d)",
    )

    @field_validator("pretrained")
    @classmethod
    def _pretrained_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("pretrained must be a tag, a checkpoint file or None")
        return value

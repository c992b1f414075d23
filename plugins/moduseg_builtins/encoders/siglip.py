"""The ``siglip`` encoder: SigLIP vision-tower patch tokens through Hugging Face ``transformers``.

Light: the options (``moduseg_builtins.encoders`` registers them); the model code is in ``_siglip_impl``.
"""

from __future__ import annotations

from pydantic import Field

from ._vit_options import ViTEncoderOptions


class SiglipOptions(ViTEncoderOptions):
    model: str = Field(
        "google/siglip-base-patch16-224",
        description=(
            "Hugging Face hub id of a SigLIP checkpoint (google/siglip-base-patch16-224, "
            "google/siglip-so400m-patch14-384, "
            "fixed-resolution SigLIP 2 such as google/siglip2-base-patch16-512...) or a local checkpoint directory"
        ),
    )

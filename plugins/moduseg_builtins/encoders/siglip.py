"""The ``siglip`` encoder: SigLIP vision-tower patch tokens through Hugging Face ``transformers``.

Light entry point (options + registration); the model code is in ``_siglip_impl``.
"""

from __future__ import annotations

from pydantic import Field

from moduseg_core import hookimpl

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


def _build(options: SiglipOptions):
    from ._siglip_impl import SiglipEncoder

    return SiglipEncoder(options)


@hookimpl
def register_encoders(register):
    register(
        "siglip",
        _build,
        options=SiglipOptions,
        summary="SigLIP vision patch tokens (HF transformers), position embeddings interpolated to the padded grid",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (google/siglip-*, google/siglip2-* fixed-resolution) or a local checkpoint dir",
    )

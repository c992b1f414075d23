"""The ``radio`` encoder: NVIDIA RADIO / C-RADIOv4 spatial features (the paper's encoder).

Light entry point (options + registration); the adapter is in ``_radio_impl``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from moduseg_core import hookimpl

from ._vit_options import ViTEncoderOptions

#: the paper's backbone
DEFAULT_MODEL = "nvidia/C-RADIOv4-SO400M"


class RadioOptions(ViTEncoderOptions):
    model: str = Field(
        DEFAULT_MODEL,
        description=(
            "Hugging Face hub id (nvidia/C-RADIOv4-SO400M, nvidia/C-RADIOv4-H...; loaded with trust_remote_code) or a "
            "local copy of such a repo; or a torch.hub version name (c-radio_v4-so400m, c-radio_v4-h, radio_v2.5-l...) "
            "or checkpoint file, loaded through `hub_repo`"
        ),
    )
    hub_repo: str = Field(
        "NVlabs/RADIO",
        description="torch.hub repository for version names: a GitHub owner/repo or a local clone with hubconf.py",
    )
    norm: bool = Field(
        True,
        description="intermediate blocks only (layers other than -1): apply the backbone's final norm "
        "(RADIO's forward_intermediates norm=True); layer -1 is the model's own spatial output",
    )

    @field_validator("hub_repo")
    @classmethod
    def _hub_repo_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("hub_repo must be a GitHub owner/repo or a directory with hubconf.py")
        return value


def _build(options: RadioOptions):
    from ._radio_impl import RadioEncoder

    return RadioEncoder(options)


@hookimpl
def register_encoders(register):
    register(
        "radio",
        _build,
        options=RadioOptions,
        summary="NVIDIA RADIO / C-RADIOv4 spatial features at native size padded to 16 (the paper's encoder)",
        extra="radio",
        requires=("torch", "timm", "einops"),
        weights="Hugging Face hub (nvidia/C-RADIOv4-SO400M, trust_remote_code) or torch.hub NVlabs/RADIO versions",
    )

"""The ``radio`` encoder: NVIDIA RADIO / C-RADIOv4 spatial features (the paper's encoder).

Light: the options (``moduseg_builtins.encoders`` registers them); the adapter is in ``_radio_impl``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

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

    def doctor_checks(self) -> list:
        """The weights: a local copy or a hub id in the cache (or reachable); a torch.hub version needs its repo."""
        from pathlib import Path

        from moduseg_core.doctor.checks import fail, hf_model, hub_reachable, ok

        if "/" in self.model or Path(self.model).expanduser().is_dir():
            return [hf_model(self.model, "model", alternative=", or --set encoder.model=<a local copy>")]
        if Path(self.model).expanduser().is_file() or Path(self.hub_repo).expanduser().is_dir() or hub_reachable():
            return [ok(f"torch.hub {self.hub_repo} {self.model}")]
        return [fail(f"torch.hub repo {self.hub_repo} is not a local clone and GitHub is unreachable",
                     "clone NVlabs/RADIO and --set encoder.hub_repo=<the clone>")]

    @field_validator("hub_repo")
    @classmethod
    def _hub_repo_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("hub_repo must be a GitHub owner/repo or a directory with hubconf.py")
        return value

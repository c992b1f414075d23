"""``SiglipEncoder``: SigLIP vision-tower patch tokens (``transformers.SiglipVisionModel``).

The vision tower of a full SigLIP checkpoint (``SiglipModel``, ``model_type`` "siglip")
or a vision-only one ("siglip_vision_model") is loaded with
``SiglipVisionModel.from_pretrained``. SigLIP has no CLS or register tokens: every
token is a patch. Pixels are normalised with SigLIP's statistics (mean = std = 0.5)
and zero-padded to the patch multiple after normalisation (``_vit_common``); the
learned position table (a square grid at the training size) is interpolated
bicubically to the padded grid by the model itself (``interpolate_pos_encoding=True``).
With ``norm`` the vision tower's ``post_layernorm`` is applied (``last_hidden_state``
= post_layernorm(last block)); the attention-pooling head is not used.
"""

from __future__ import annotations

import torch

from moduseg_core import ModusegError

from ._vit_common import HALF, HFViTEncoder, load_hf_model, resolve_hf_source
from .siglip import SiglipOptions

CHECKPOINT_TYPES = ("siglip", "siglip_vision_model")
EXAMPLE = "google/siglip-base-patch16-224"


def _loader(model: str):
    def load(source: str):
        from transformers import AutoConfig, SiglipVisionModel

        model_type = getattr(AutoConfig.from_pretrained(source), "model_type", "?")
        if model_type not in CHECKPOINT_TYPES:
            hint = ""
            if model_type == "siglip2":
                hint = " (NaFlex SigLIP 2 checkpoints are not supported: use a fixed-resolution one)"
            raise ModusegError(
                f"model {model!r} is a {model_type!r} checkpoint{hint}; the siglip encoder needs a SigLIP checkpoint "
                f"({' or '.join(map(repr, CHECKPOINT_TYPES))}), e.g. {EXAMPLE!r}"
            )
        from transformers.utils import logging as hf_logging

        # A full SigLIP checkpoint holds the text tower too: its keys are expected to go unused, so the
        # loading report (a table of every unused key) is not shown.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return SiglipVisionModel.from_pretrained(source)
        finally:
            hf_logging.set_verbosity(verbosity)

    return load


def load_model(model: str) -> torch.nn.Module:
    source, local = resolve_hf_source(model, EXAMPLE)
    return load_hf_model(
        model,
        source,
        local,
        loader=_loader(model),
        encoder="siglip",
        supported=("siglip_vision_model",),
        example=EXAMPLE,
    )


class SiglipEncoder(HFViTEncoder):
    """Dense SigLIP patch tokens; see ``SiglipOptions``."""

    name = "siglip"
    forward_kwargs = {"interpolate_pos_encoding": True}

    def __init__(self, options: SiglipOptions):
        super().__init__(options)
        model = load_model(options.model)
        tower = getattr(model, "vision_model", model)  # transformers 4.x nests the tower, 5.x does not
        self._setup_model(model, final_norm=tower.post_layernorm, prefix_tokens=0)
        self._set_normalisation(HALF, HALF)

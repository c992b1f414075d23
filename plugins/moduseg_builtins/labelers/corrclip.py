"""The ``corrclip`` labeler: the paper's pseudo masks (CLIP guided by DINO correlations and by masks).

This module is light: the options (``moduseg_builtins.labelers`` registers them). torch, open_clip,
transformers and scikit-learn are imported by the factory (``_corrclip_impl``). The rule is in
docs/labelers.md; every constant below defaults to the value of the released CorrCLIP code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from .clip import ClipPromptOptions


class CorrClipLabelerOptions(ClipPromptOptions):
    dino: str = Field(
        "facebook/dino-vitb8",
        description="the DINO ViT whose last-block query + key give the patch correlations: a transformers ViTModel "
        "hub id (facebook/dino-vitb8, facebook/dino-vits8) or a local folder saved with save_pretrained",
    )
    proposer: str = Field(
        "entityseg",
        description="registered proposer whose masks are merged, scope the attention and correct the map "
        "(the paper: EntitySeg)",
    )
    proposer_options: dict[str, Any] = Field(default_factory=dict, description="options of that proposer")
    min_score: float = Field(
        0.5,
        ge=0.0,
        description="masks scoring below this are not used (released: 0.5; the proposer's own threshold applies first)",
    )
    alpha: float = Field(1.0, description="weight of the spatial branch (released: 1.0)")
    beta: float = Field(0.5, description="weight of the semantic branch (released: 0.5)")
    tau: float = Field(4.0, gt=0, description="temperature of the DINO-correlation attention (released: 4)")
    spatial_blocks: int | None = Field(
        None,
        ge=1,
        description="blocks averaged by the spatial branch, the ones just before the last two; null = the released "
        "count for the depth (12 blocks: 5, 24: 12, 32: 28, else depth - 4)",
    )
    merge_eps: float = Field(
        0.2,
        gt=0.0,
        description="DBSCAN eps on (max similarity - similarity) of the masks' mean DINO features (released: 0.2)",
    )
    merge_min_samples: int = Field(1, ge=1, description="DBSCAN min_samples of the mask merging (released: 1)")
    max_long_side: int | None = Field(
        2048, ge=16, description="the resize to short_side also keeps the longer side at most this (released: 2048)"
    )
    pad_multiple: int = Field(
        56, ge=1, description="each window is zero-padded on both sides to a multiple of this (released: 56)"
    )
    prob_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="pixels whose best class probability is below this become background (0 = plain argmax, "
        "METHOD.md; the released open-vocabulary configs use 0.2 on VOC, 0.25 on COCO)",
    )

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype"})
    #: proposer_options take where the model is (cropformer_root, weights...) from the run's own proposer when it is
    #: the same one and they leave it unset (moduseg_core.contract.nested)
    nested_options: ClassVar[dict[str, tuple[str, str]]] = {"proposer_options": ("proposer", "proposer")}

    def doctor_checks(self) -> list:
        from ._checks import corrclip_checks

        return corrclip_checks(self)

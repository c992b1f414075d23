"""The ``clip`` labeler: dense CLIP logits for the image's own labels (the paper's kind of labeler).

This module is light: the options (``moduseg_builtins.labelers`` registers them). torch and open_clip
are imported by the factory (``_clip_impl``). The rule is documented in docs/labelers.md.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from moduseg_core import Options

from .._shared import Device, Dtype
from ._clip_text import STUFF_WORDS


class ClipPromptOptions(Options):
    """What the CLIP-based labelers share: the model, the prompts, the logits and the sliding windows."""

    model: str = Field(
        "ViT-B-16",
        description="open_clip architecture (open_clip.list_models()), or 'hf-hub:ORG/REPO' / "
        "'local-dir:PATH' (a folder with open_clip_config.json and the weights)",
    )
    pretrained: str | None = Field(
        "metaclip_fullcc",
        description="open_clip pretrained tag of `model` (metaclip_fullcc, openai...) or a checkpoint file; "
        "null = random weights (only for tests: the maps mean nothing)",
    )
    classes: str = Field(
        "voc",
        description="class names in the dataset's id order: voc, coco or a text file (background first); "
        "must match the dataset's classes",
    )
    names: dict[str, list[str]] = Field(
        default_factory=dict,
        description="extra prompt names per class, e.g. {diningtable: [table]}; a class scores the best of its "
        "names (voc names such as tvmonitor have built-in ones)",
    )
    templates: list[str] | None = Field(
        None,
        description="prompt templates with one {} each; null = the 80 ImageNet templates; each name's text "
        "embedding is the normalised mean over templates",
    )
    background: list[str] = Field(
        default_factory=lambda: list(STUFF_WORDS),
        min_length=1,
        description="stuff words; the background logit is the best of them (the paper's 26 words)",
    )
    logit_scale: float = Field(40.0, gt=0, description="temperature of the cosine logits (paper: 40)")
    short_side: int | None = Field(
        336, ge=16, description="resize so the shorter side is this before the sliding windows; null = native size"
    )
    crop: int = Field(336, ge=16, description="sliding window side in pixels (a multiple of the patch size)")
    stride: int = Field(112, ge=1, description="sliding window step in pixels (at most crop)")
    device: Device = Field(
        "auto", description="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"
    )
    dtype: Dtype = Field("float32", description="compute precision of the model")

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype"})

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, templates: list[str] | None) -> list[str] | None:
        if templates is not None:
            if not templates:
                raise ValueError("templates must not be empty (null = the 80 ImageNet templates)")
            for template in templates:
                if template.count("{}") != 1:
                    raise ValueError(f"template {template!r} must contain exactly one {{}} for the class name")
        return templates


class ClipLabelerOptions(ClipPromptOptions):
    dense: Literal["sclip", "clearclip", "maskclip"] = Field(
        "sclip",
        description="dense tokens from the last block: sclip = q-q + k-k attention, clearclip = q-q attention, "
        "maskclip = the value path; no residual and no MLP in that block for all three",
    )
    correct_with: str | None = Field(
        None,
        description="map correction: a registered proposer whose every mask (score >= correct_min_score) is set "
        "to its majority class; null = no correction",
    )
    correct_options: dict[str, Any] = Field(default_factory=dict, description="options of the correct_with proposer")
    correct_min_score: float = Field(0.5, ge=0.0, description="proposals scoring below this are not used to correct")
    batch_size: int = Field(16, ge=1, description="sliding windows per forward pass")

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "batch_size"})
    #: see CorrClipLabelerOptions.nested_options
    nested_options: ClassVar[dict[str, tuple[str, str]]] = {"correct_options": ("proposer", "correct_with")}

    def doctor_checks(self) -> list:
        from ._checks import clip_weights

        return [clip_weights(self)]

"""The ``entityseg`` proposer: the paper's class-agnostic entity masks (EntitySeg / CropFormer on detectron2).

detectron2 and CropFormer are not on PyPI. This plugin imports them when they are installed
(detectron2 as a package, CropFormer as the ``Entityv2/CropFormer`` folder of
https://github.com/qqlu/Entity named by ``cropformer_root``) and otherwise stops with one line
saying what to install; docs/proposers.md has the steps. ``moduseg plugins list`` shows it as
not importable until detectron2 is there.

The model is driven through detectron2's predictor interface: a callable that takes a BGR
``uint8 H×W×3`` image and returns ``{"instances": Instances}`` whose ``pred_masks`` (N×H×W) and
``scores`` (N) are read; masks scoring at least ``score_threshold`` (0.6, the paper's value) are
kept. The tests drive this interface with a stand-in predictor module (see ``predictor``),
since detectron2 cannot be installed from PyPI.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from moduseg_core import Options

from .._shared import Device, Dtype
from ._common import device_field, dtype_field
from ._entityseg_setup import (  # noqa: F401 - the constants are this module's too
    CROPFORMER_HINT,
    DEFAULT_CONFIG,
    DEFAULT_WEIGHTS_NAME,
    DETECTRON2_INSTALL,
    PIP_NAMES,
    WEIGHTS_DOWNLOAD,
    WEIGHTS_FILE,
    WEIGHTS_REPO,
    checks,
)


class EntitySegOptions(Options):
    cropformer_root: str | None = Field(
        None,
        description=(
            "the CropFormer folder (Entity/Entityv2/CropFormer, or detectron2/projects/CropFormer) holding "
            "mask2former/ "
            "and configs/; added to sys.path. null = CropFormer's mask2former package is already importable"
        ),
    )
    config_file: str = Field(
        DEFAULT_CONFIG,
        description="detectron2 config: an existing path, or a path relative to cropformer_root",
    )
    weights: str | None = Field(
        None,
        description=f"local checkpoint for the config (the paper's: {DEFAULT_WEIGHTS_NAME}); null = that file in the "
        f"Hugging Face cache (`{WEIGHTS_DOWNLOAD}`), for the default config only",
    )
    trust_weights: bool = Field(
        False,
        description="load a checkpoint holding objects that torch's safe loader refuses (weights_only=False: it can "
        "run code from the file); only for a file you trust",
    )
    predictor_type: Literal["default", "cropformer"] = Field(
        "default",
        description="default = detectron2 DefaultPredictor (Mask2Former configs); cropformer = CropFormer's "
        "CropFormerPredictor from demo_cropformer/predictor.py (cropformer_* configs)",
    )
    opts: list[str] = Field(
        default_factory=list,
        description="extra detectron2 config overrides as KEY VALUE pairs, e.g. [INPUT.MIN_SIZE_TEST, 800]",
    )
    score_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="keep masks whose score is at least this (paper: 0.6)"
    )
    predictor: str | None = Field(
        None,
        description=(
            "'package.module:factory' of a callable factory(options) -> predictor following detectron2's call "
            "interface, used instead of building CropFormer (other detectron2 entity models; the tests' stand-in)"
        ),
    )
    device: Device = device_field()
    dtype: Dtype = dtype_field()

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "dtype", "trust_weights"})
    #: where the model is: a component holding entityseg's options inside its own (the corrclip labeler's
    #: ``proposer_options``) takes these from the run's own ``entityseg`` proposer unless it sets them
    shared_fields: ClassVar[frozenset[str]] = frozenset(
        {"cropformer_root", "config_file", "weights", "predictor_type", "predictor", "trust_weights"}
    )

    @field_validator("opts", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """YAML reads ``[INPUT.MIN_SIZE_TEST, 800]`` as a string and a number; detectron2 takes text for both."""
        if isinstance(value, (list, tuple)):
            return [v if isinstance(v, str) else str(v) for v in value]
        return value

    @field_validator("opts")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        if len(value) % 2:
            raise ValueError("opts must hold KEY VALUE pairs (an even number of items)")
        return [str(v) for v in value]

    def doctor_checks(self) -> list:
        return checks(self)

    @field_validator("predictor")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("predictor must look like 'package.module:factory'")
        return value

"""Run configuration: which component of each kind, with which options, and the method's numbers.

A config is a YAML file and/or command-line choices. ``--proposer sam2`` picks a
component; ``--set proposer.points_per_side=16`` sets one of its options;
``--set method.top_k=5`` sets a method number. Options are validated against the
component's own options model when the run starts, with one-line errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moduseg_core.contract.errors import ModusegError, did_you_mean
from moduseg_core.contract.kinds import KINDS, RUN_KINDS
from moduseg_core.contract.options import Options, describe_field, parse_options


class Choice(BaseModel):
    """One component: its registered name and its options (validated later by the plugin)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class MethodConfig(Options):
    """The method's numbers (shared/METHOD.md defaults)."""

    min_region_area: int = Field(300, ge=0, description="bank: drop a purified region with fewer pixels")
    filter_ratio: float = Field(
        0.25, ge=0.0, lt=1.0, description="bank: per foreground class, drop this fraction farthest from the mean"
    )
    top_k: int = Field(25, ge=1, description="inference: neighbours retrieved per mask (capped at the bank size)")
    min_mask_area: int = Field(300, ge=0, description="inference: drop proposals and NMS survivors smaller than this")
    nms_iou: float = Field(
        0.4, gt=0.0, le=1.0, description="inference: per-class NMS drops a mask whose IoU with a kept one exceeds this"
    )
    batch_images: int = Field(8, ge=1, description="images handed to the encoder at once")
    batch_window: int = Field(
        8, ge=1,
        description="inference groups the images decoded ahead, up to this many batches of them, by the encoder's "
        "padded input size, so that batches are full whatever the image sizes (1 = consecutive images only)",
    )
    loader_workers: int = Field(
        2, ge=0, description="images decoded ahead by this many workers (0 = in the main thread)"
    )
    overlap: bool = Field(
        True, description="retrieval, NMS and painting of one batch run while the next batch is proposed and encoded"
    )
    work_pixels: int | None = Field(
        4_194_304, ge=65_536,
        description="images with more pixels are proposed, encoded, pooled and labelled on a downscaled copy of at "
        "most this many pixels, and the class map is scaled back (nearest); bounds memory (docs/formats.md). "
        "Smaller images (all of VOC and COCO) are untouched; null = always native size",
    )
    max_image_pixels: int | None = Field(
        150_000_000,
        ge=1,
        description="images with more pixels are refused before decoding (3 bytes a pixel); null = no limit",
    )

    miou_average: Literal["present", "all"] = Field(
        "present",
        description="evaluation: mIoU over the classes with a non-empty union (present, METHOD.md) or over every "
        "class, an empty union counting as 0 (all, the released code); equal on full VOC val, not on subsets",
    )

    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"batch_images", "batch_window", "loader_workers", "overlap", "max_image_pixels", "miou_average"}
    )


class RayConfig(Options):
    """How ``--executor ray`` runs the per-image work (docs/scaling.md); not part of any result."""

    actors: int = Field(1, ge=1, description="workers (Ray actors), each building the components once")
    num_cpus: float = Field(1.0, ge=0.0, description="logical CPUs each actor reserves")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs each actor reserves (0.5 puts two actors on a GPU)")
    threads: int | None = Field(
        None, ge=1,
        description="CPU threads of torch and BLAS in each actor; null = as many as --executor local uses on this "
        "machine, so that CPU results are byte-identical to it (the thread count changes float rounding)",
    )


EXECUTORS = ("local", "ray")


class RunConfig(BaseModel):
    """Everything a run needs. Defaults are the paper's method with runnable components."""

    model_config = ConfigDict(extra="forbid")

    dataset: Choice = Field(default_factory=lambda: Choice(name="voc"))
    bank_split: str = "train"
    eval_split: str = "val"
    labeler: Choice = Field(default_factory=lambda: Choice(name="gt"))
    proposer: Choice = Field(default_factory=lambda: Choice(name="slic"))
    purifier: Choice = Field(default_factory=lambda: Choice(name="erode"))
    encoder: Choice = Field(default_factory=lambda: Choice(name="dinov2"))
    aggregator: Choice = Field(default_factory=lambda: Choice(name="soft"))
    index: Choice = Field(default_factory=lambda: Choice(name="exact"))
    method: MethodConfig = Field(default_factory=MethodConfig)
    bank_limit: int | None = Field(None, ge=1, description="use only the first N bank images")
    eval_limit: int | None = Field(None, ge=1, description="evaluate only the first N images")
    overlays: bool = True
    executor: Literal["local", "ray"] = Field(
        "local",
        description="where the per-image work runs: this process (local) or a Ray cluster (ray; docs/scaling.md)",
    )
    ray: RayConfig = Field(default_factory=RayConfig)
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description=(
            "an image that cannot be processed stops the job (fail) or is logged to errors.jsonl and left out "
            "(skip)"
        ),
    )

    def choice(self, kind: str) -> Choice:
        return getattr(self, kind)


TOP_LEVEL_KEYS = ("bank_split", "eval_split", "bank_limit", "eval_limit", "overlays", "on_error", "executor")


def load_config(path: Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ModusegError(f"config file {path} does not exist; pass an existing YAML file to --config") from exc
    except IsADirectoryError as exc:
        raise ModusegError(f"config file {path} is a folder; pass a YAML file to --config") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModusegError(
            f"config file {path} cannot be read ({exc.__class__.__name__}: {exc}); pass a readable YAML file"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ModusegError(f"config file {path} is not valid YAML{where}; fix the syntax") from exc
    if not isinstance(data, dict):
        raise ModusegError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    allowed = list(RunConfig.model_fields)
    for key in data:
        if key not in RunConfig.model_fields:
            raise ModusegError(
                f"{source}: unknown setting {key!r}{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})"
            )
    normalised = dict(data)
    for kind in KINDS:
        value = normalised.get(kind)
        if isinstance(value, str):  # "proposer: slic" is short for {name: slic}
            normalised[kind] = {"name": value}
    try:
        return RunConfig.model_validate(normalised)
    except ValidationError as exc:
        raise ModusegError(f"{source}: setting {invalid_setting(exc, normalised)}") from exc


def invalid_setting(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line for the first error of a ``RunConfig`` validation: the key, the bad value, what is allowed."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    value: Any = data
    for part in loc:
        value = value.get(part, error.get("input")) if isinstance(value, dict) else error.get("input")
    allowed = ""
    if len(loc) == 1 and loc[0] in RunConfig.model_fields:
        allowed = f" (allowed: {describe_field(RunConfig, loc[0])})"
        if loc[0] in KINDS:
            allowed = " (allowed: a component name, or {name: NAME, options: {...}})"
    elif loc and loc[0] in KINDS:
        allowed = " (a component is {name: NAME, options: {...}})"
    return f"{key}={value!r} is invalid: {error['msg']}{allowed}"


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars or lists: ``5``, ``0.4``, ``true``, ``[8, 10]``, ``path/x``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    config: RunConfig, *, choices: dict[str, str | None] | None = None, sets: list[str] | None = None
) -> RunConfig:
    """Apply ``--<kind> NAME`` choices and ``--set key=value`` overrides; returns a new config."""
    data = config.model_dump(mode="python")
    for kind, name in (choices or {}).items():
        if name is None:
            continue
        if data[kind]["name"] != name:
            data[kind] = {"name": name, "options": {}}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ModusegError(
                f"--set {item!r} is not KEY=VALUE; write e.g. --set encoder.layers=[9] or --set method.top_k=5"
            )
        value = parse_value(raw)
        head, dot, rest = key.partition(".")
        if head in KINDS:
            if not dot:
                raise ModusegError(
                    f"--set {item!r}: name an option, e.g. --set {head}.OPTION=VALUE (use --{head} NAME to pick the "
                    "component)"
                )
            data[head]["options"][rest] = value
        elif head == "method":
            if rest not in MethodConfig.model_fields:
                raise ModusegError(
                    f"--set {item!r}: method has no setting {rest!r}{did_you_mean(rest, MethodConfig.model_fields)} "
                    f"(allowed: {', '.join(MethodConfig.model_fields)})"
                )
            data["method"][rest] = value
        elif head == "ray" and dot:
            if rest not in RayConfig.model_fields:
                raise ModusegError(
                    f"--set {item!r}: ray has no setting {rest!r}{did_you_mean(rest, RayConfig.model_fields)} "
                    f"(allowed: {', '.join(RayConfig.model_fields)})"
                )
            data["ray"][rest] = value
        elif head in TOP_LEVEL_KEYS and not dot:
            data[head] = value
        else:
            allowed = ["dataset.*", *(f"{k}.*" for k in RUN_KINDS), "method.*", "ray.*", *TOP_LEVEL_KEYS]
            raise ModusegError(
                f"--set {item!r}: unknown key {key!r}{did_you_mean(head, allowed)} (allowed: {', '.join(allowed)})"
            )
    try:
        method = parse_options("method", "settings", MethodConfig, data.pop("method"))
    except ModusegError as exc:
        raise ModusegError(str(exc).replace("--set method.", "--set method.")) from exc
    ray = parse_options("ray", "settings", RayConfig, data.pop("ray"))
    try:
        composed = RunConfig.model_validate({**data, "method": method, "ray": ray})
    except ValidationError as exc:
        raise ModusegError(f"--set {invalid_setting(exc, data)}") from exc
    from .nested import inherit_shared  # a nested component takes where its model is from the run's own

    return inherit_shared(composed)


def coco_mini_root() -> Path:
    """Where coco-mini is: ``$MODUSEG_COCO_MINI``, else ``shared/data/coco-mini`` in this folder or one above."""
    env = os.environ.get("MODUSEG_COCO_MINI")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents):
        candidate = base / "shared" / "data" / "coco-mini"
        if candidate.is_dir():
            return candidate
    return Path("../shared/data/coco-mini")


def coco_mini_preset(data: Path | None, sets: list[str] | None, fix: str) -> tuple[Path, list[str]]:
    """The embedded coco-mini preset and the ``--set`` list that points it at the data folder."""
    from importlib.resources import files

    root = data or coco_mini_root()
    if not (root / "JPEGImages").is_dir():
        raise ModusegError(f"coco-mini not found at {root} (no JPEGImages/); {fix}")
    return Path(str(files("moduseg_core") / "presets" / "coco-mini.yaml")), [f"dataset.root={root}", *(sets or [])]

"""torch helpers shared by the foundation-model proposers' implementation modules (heavy: imports torch)."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from moduseg_core import ModusegError, Proposals

from .._shared import short_reason, torch_dtype
from .sam import GeneratorOptions


@contextlib.contextmanager
def autocast(device: torch.device, dtype: str) -> Iterator[None]:
    """Mixed precision for models that expect it (SAM, SAM 2, detectron2); float32 = no autocast."""
    if dtype == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch_dtype(dtype)):
        yield


def to_proposals(
    masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor, scores: Sequence[float] | np.ndarray, hw: tuple[int, int]
) -> Proposals:
    """Masks + scores → ``Proposals`` sorted by descending score (stable), scores clipped to [0, 1].

    A ``bool`` tensor stays on its device (``Proposals.device_masks``: sorted there, copied to the host
    only when read). Every mask must already be ``H×W``; a wrong size is a bug in the model wrapper, named here.
    """
    height, width = hw
    if len(masks) == 0:
        return Proposals.empty(height, width)
    if isinstance(masks, torch.Tensor):
        stacked = masks.bool()
    elif isinstance(masks, np.ndarray):
        stacked = np.ascontiguousarray(masks, dtype=bool)
    else:
        stacked = np.stack([np.asarray(m, dtype=bool) for m in masks])
    if stacked.shape[1:] != (height, width):
        raise ValueError(f"masks of shape {stacked.shape[1:]} for a {height}×{width} image")
    values = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, 1.0).astype(np.float32)
    return Proposals(stacked, values).select(np.argsort(-values, kind="stable"))  # (a tensor is sorted on its device)


def hub_download(url: str, what: str) -> Path:
    """A checkpoint URL → a file in the torch hub cache (downloaded once, atomically, by torch.hub)."""
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    if not filename:
        raise ModusegError(f"{what} URL {url!r} names no file; give a URL ending in the checkpoint's file name")
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=sys.stderr.isatty())
    except Exception as exc:  # offline, 404, interrupted...
        raise ModusegError(
            f"could not download the {what} {url} ({short_reason(exc)}); download it on a connected machine "
            f"into {target} or pass checkpoint=/path/to/{filename}"
        ) from exc
    return target


#: GeneratorOptions fields that are ModuSeg's own (not the library generators' keyword arguments)
OURS = ("engine", "fast_decoder", "batch_size")
#: keyword arguments of ``SamAutomaticMaskGenerator`` and ``SAM2AutomaticMaskGenerator`` that both
#: proposers expose as options of the same names (``sam.GeneratorOptions``)
GENERATOR_OPTIONS = tuple(name for name in GeneratorOptions.model_fields if name not in OURS)


def mask_generator(generator_class: type, model: torch.nn.Module, options: object, name: str, *extra: str) -> object:
    """An automatic mask generator built from the proposer's options (``GENERATOR_OPTIONS`` plus
    ``extra`` option names), binary masks out; a missing OpenCV is a one-line error."""
    kwargs = {key: getattr(options, key) for key in (*GENERATOR_OPTIONS, *extra)}
    try:
        return generator_class(model, output_mode="binary_mask", **kwargs)
    except ImportError as exc:  # min_mask_region_area > 0 imports cv2
        raise ModusegError(
            f"proposer {name!r} option min_mask_region_area={kwargs['min_mask_region_area']} needs OpenCV "
            f"({short_reason(exc)}); pip install opencv-python-headless, or set min_mask_region_area=0"
        ) from exc


def load_every_key(model: torch.nn.Module, state: dict, *, mismatch: str, fix: str) -> None:
    """``model.load_state_dict(state)`` where every key must match; otherwise one line:
    ``{mismatch}: <what differs>; {fix}``."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModusegError(f"{mismatch}: {short_reason(exc, 160)}; {fix}") from exc
    if result.missing_keys or result.unexpected_keys:
        first = (result.missing_keys or result.unexpected_keys)[0]
        raise ModusegError(
            f"{mismatch}: {len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {first!r}); {fix}"
        )


def read_state_dict(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModusegError(
            f"{what} {path} is not a readable torch checkpoint ({short_reason(exc)}); re-download it"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModusegError(f"{what} {path} holds no state dict of tensors; point it at a released checkpoint file")
    return state

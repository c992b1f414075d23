"""``RadioEncoder``: an adapter for NVIDIA RADIO models (C-RADIOv4-SO400M is the paper's encoder).

RADIO's model code is not a pip package: it is loaded by its published loaders,

* ``AutoModel.from_pretrained('nvidia/C-RADIOv4-SO400M', trust_remote_code=True)`` (hub id,
  or a local copy of the hub repository), or
* ``torch.hub.load('NVlabs/RADIO', 'radio_model', version='c-radio_v4-so400m')``,

and used through its documented call interface:

* input ``B×3×H×W`` in ``[0, 1]``; the model normalises it itself (its input conditioner),
  and H, W must be multiples of ``model.min_resolution_step`` (the patch size, 16, times
  the ViTDet window when one is set);
* ``model(x)`` returns ``(summary, spatial_features)`` with spatial features ``B×T×D``
  (``T = H/16 · W/16``, row-major), or a dict whose ``'backbone'`` entry is that pair when
  adaptors are loaded;
* ``forward_intermediates(x, indices=..., norm=..., output_fmt='NLC', intermediates_only=True)``
  (on the model, or on ``model.radio_model`` for the Hugging Face wrapper) for earlier blocks;
* mixed precision through ``torch.autocast`` (weights are kept in float32).

Preprocessing is the paper's: the image keeps its native size (or ``resize``), is padded
at the bottom/right with black pixels to the resolution step, scaled to ``[0, 1]`` and
handed to the model, which normalises it. Padding is therefore black (0 before RADIO's
normalisation), which is what the paper's released code feeds RADIO.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from moduseg_core import Geometry, ModusegError

from .._shared import short_reason
from ._vit_common import PatchEncoder, _no_transformers_bars, looks_like_path, resolve_hf_source, resolve_layers
from .radio import DEFAULT_MODEL, RadioOptions

_HF_FIX = (
    "download it on a connected machine (e.g. `hf download {model}`) and copy the Hugging Face cache here, "
    "or point `model` at a local copy of the repository (config.json, hf_model.py..., model.safetensors)"
)


def _is_hf(model: str) -> bool:
    """Hub ids are ``owner/name``; a directory is a local copy of such a repo."""
    path = Path(model).expanduser()
    if path.is_dir():
        return True
    if path.is_file():
        return False
    return "/" in model or looks_like_path(model)


def _load_hf(model: str) -> Any:
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise ModusegError(
            f"encoder 'radio' model {model!r} is a Hugging Face repository and needs transformers; install it with: "
            "pip install 'moduseg[radio]', or use a torch.hub version name such as 'c-radio_v4-so400m'"
        ) from exc
    source, local = resolve_hf_source(model, DEFAULT_MODEL)
    try:
        with _no_transformers_bars():  # silent, as the other encoders: a command's stderr carries its own lines
            return AutoModel.from_pretrained(source, trust_remote_code=True)
    except Exception as exc:
        if local:
            raise ModusegError(
                f"could not load the RADIO checkpoint directory {model!r} ({short_reason(exc)}); it must be a copy of "
                "a "
                f"RADIO hub repository (config.json with auto_map, its .py files and weights), e.g. {DEFAULT_MODEL!r}"
            ) from exc
        raise ModusegError(
            f"could not load model {model!r} from the Hugging Face hub or its local cache ({short_reason(exc)}); "
            + _HF_FIX.format(model=model)
        ) from exc


def _load_hub(version: str, hub_repo: str) -> Any:
    repo_dir = Path(hub_repo).expanduser()
    local = repo_dir.is_dir()
    if local and not (repo_dir / "hubconf.py").is_file():
        raise ModusegError(
            f"encoder 'radio' hub_repo={hub_repo!r} is a directory without hubconf.py; point it at a clone of "
            "NVlabs/RADIO or use hub_repo='NVlabs/RADIO'"
        )
    if not local and (looks_like_path(hub_repo) or hub_repo.count("/") != 1):
        raise ModusegError(
            f"encoder 'radio' hub_repo={hub_repo!r} is neither a local clone (no such directory) nor a GitHub "
            "owner/repo; use hub_repo='NVlabs/RADIO' or the path of a clone"
        )
    if Path(version).expanduser().is_file():
        version = str(Path(version).expanduser())
    kwargs: dict[str, Any] = {"version": version, "progress": False}
    try:
        if local:
            return torch.hub.load(str(repo_dir), "radio_model", source="local", **kwargs)
        return torch.hub.load(hub_repo, "radio_model", source="github", trust_repo=True, skip_validation=True, **kwargs)
    except Exception as exc:
        raise ModusegError(
            f"could not load RADIO version {version!r} through torch.hub from {hub_repo!r} ({short_reason(exc)}); on "
            "an "
            f"offline machine clone NVlabs/RADIO and set hub_repo to the clone, and put the checkpoint in "
            f"torch.hub's cache (or pass its file as model), or use the Hugging Face id {DEFAULT_MODEL!r}"
        ) from exc


def load_radio(model: str, hub_repo: str) -> Any:
    loaded = _load_hf(model) if _is_hf(model) else _load_hub(model, hub_repo)
    missing = [name for name in ("patch_size",) if getattr(loaded, name, None) is None]
    if missing or not callable(loaded):
        raise ModusegError(
            f"encoder 'radio' loaded a {type(loaded).__name__} from {model!r} that lacks RADIO's interface "
            f"({', '.join(missing) or 'not callable'}); use a RADIO checkpoint such as {DEFAULT_MODEL!r}"
        )
    return loaded


def _spatial(output: Any, model: str) -> torch.Tensor:
    """The spatial features of a RADIO forward output (pair, RadioOutput or adaptor dict)."""
    if isinstance(output, dict):
        if "backbone" not in output:
            raise ModusegError(f"RADIO model {model!r} returned a dict without 'backbone' ({', '.join(output)})")
        output = output["backbone"]
    features = getattr(output, "features", None)
    if features is None:
        try:
            _, features = output
        except (TypeError, ValueError) as exc:
            raise ModusegError(
                f"RADIO model {model!r} returned {type(output).__name__}, not (summary, spatial_features)"
            ) from exc
    if features.ndim == 4:  # NCHW → NLC
        features = features.flatten(2).transpose(1, 2)
    return features


class RadioEncoder(PatchEncoder):
    """RADIO spatial features; see ``RadioOptions``."""

    name = "radio"

    def __init__(self, options: RadioOptions):
        super().__init__(options)
        model = load_radio(options.model, options.hub_repo)
        model.eval().requires_grad_(False)
        # float32 weights; bfloat16/float16 run under autocast (RADIO's documented mixed precision). A checkpoint
        # stored in half precision also sets its input conditioner to cast to that dtype: undo that too.
        self.model = model.to(device=self.device, dtype=torch.float32)
        conditioner = getattr(model, "input_conditioner", None)
        if isinstance(getattr(conditioner, "dtype", None), torch.dtype):
            conditioner.dtype = torch.float32
        self.patch_size = int(model.patch_size)
        step = int(getattr(model, "min_resolution_step", None) or self.patch_size)
        if step % self.patch_size:
            raise ModusegError(
                f"RADIO model {options.model!r} has resolution step {step}, not a multiple of its patch size "
                f"{self.patch_size}; this model is not supported"
            )
        self.pad_multiple = step
        max_resolution = getattr(model, "max_resolution", None)
        self.max_resolution = int(max_resolution) if max_resolution else None
        self.norm = options.norm
        self._set_normalisation(None, None)  # RADIO normalises [0, 1] input itself
        self._base = getattr(model, "radio_model", model)  # the HF wrapper keeps RADIOModel here
        self.final_only = all(layer == -1 for layer in options.layers)
        if self.final_only:
            self.layers: tuple[int, ...] = (-1,)
            self.depth = None
        else:
            blocks = getattr(self._base, "blocks", None)
            if blocks is None or not hasattr(self._base, "forward_intermediates"):
                raise ModusegError(
                    f"RADIO model {options.model!r} does not expose its blocks (forward_intermediates); "
                    "use layers=[-1] (the model's spatial output)"
                )
            self.depth = len(blocks)
            self.layers = resolve_layers(options.layers, self.depth, options.model, self.name)
        probe = torch.zeros(1, 3, step, step, device=self.device)
        with torch.inference_mode():
            self.dim = int(self._forward(probe).shape[-1])

    def geometry(self, image: np.ndarray) -> Geometry:
        geometry = super().geometry(image)
        if self.max_resolution and max(geometry.padded_hw) > self.max_resolution:
            height, width = geometry.padded_hw
            raise ModusegError(
                f"encoder 'radio': the image pads to {height}×{width}, larger than the model's max_resolution "
                f"{self.max_resolution}; set encoder.resize={self.max_resolution} (or smaller)"
            )
        return geometry

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            if self.final_only:
                return _spatial(self.model(pixels), self.model_id).to(torch.float32)
            take = sorted({layer - 1 for layer in self.layers})  # RADIO's block indices are 0-based
            outputs = self._base.forward_intermediates(
                pixels,
                indices=take,
                return_prefix_tokens=False,
                norm=self.norm,
                output_fmt="NLC",
                intermediates_only=True,
            )
        if len(outputs) != len(take):
            raise ModusegError(
                f"RADIO model {self.model_id!r} returned {len(outputs)} intermediates for blocks {take}"
            )
        by_block = {
            index + 1: _spatial((None, out), self.model_id).to(torch.float32)
            for index, out in zip(take, outputs, strict=True)
        }
        total = None
        for layer in self.layers:
            total = by_block[layer] if total is None else total + by_block[layer]
        return total / len(self.layers) if len(self.layers) > 1 else total

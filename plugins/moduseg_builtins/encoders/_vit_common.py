"""What every ViT patch-token encoder shares (heavy: imports torch).

* the input-size policy (METHOD.md steps 5-6): the image keeps its native size, or
  with ``resize=N`` its longer side becomes N (aspect kept); it is then padded at the
  bottom/right to a multiple of the patch size (``Geometry``);
* normalisation and padding: with model-side statistics (``mean``/``std``) the image
  is normalised first and padded after, so padded pixels are exact zeros at the
  model's input; an encoder whose model normalises internally (RADIO) gets ``[0, 1]``
  pixels padded with black (0);
* device, dtype and batching: ``encode_batch`` stacks images whose padded sizes are
  equal, ``batch_size`` at a time;
* layer selection: 1-based block indices, negatives from the end, several = mean;
* loading Hugging Face checkpoints (hub id, local directory, offline cache) with
  one-line errors.

An encoder subclasses ``PatchEncoder`` and implements ``_forward`` (pixels → patch
tokens without prefix tokens, row-major). ``HFViTEncoder`` does that for the
``transformers`` ViTs whose hidden states are ``[prefix tokens, patches]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core import FeatureMap, Geometry, ModusegError

from .._shared import check_image, resolve_device, short_reason, torch_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

# -- small helpers --------------------------------------------------------------------------------------


def looks_like_path(model: str) -> bool:
    """True for strings that can only be a filesystem path (a hub id is ``owner/name`` or ``name``)."""
    if model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in model:
        return True
    return model.count("/") > 1 or model in (".", "..")


def resolve_layers(layers: Sequence[int], depth: int, model: str, encoder: str) -> tuple[int, ...]:
    """1-based block indices (negatives from the end) → 1-based positive indices (= ``hidden_states`` indices)."""
    resolved = []
    for layer in layers:
        if not (1 <= layer <= depth or -depth <= layer <= -1):
            raise ModusegError(
                f"encoder {encoder!r} option layers has {layer}, but {model!r} has {depth} blocks; "
                f"allowed 1..{depth} or -{depth}..-1 (-1 = last)"
            )
        resolved.append(layer if layer > 0 else depth + 1 + layer)
    return tuple(resolved)


def target_size(height: int, width: int, longer: int | None) -> tuple[int, int]:
    """The size the image is resized to: unchanged, or the longer side = ``longer`` (aspect kept)."""
    if longer is None:
        return height, width
    if height >= width:
        return longer, max(1, int(round(width * longer / height)))
    return max(1, int(round(height * longer / width))), longer


def square_patch(patch: Any, model: str) -> int:
    if isinstance(patch, (tuple, list)):
        if len(set(patch)) != 1:
            raise ModusegError(
                f"model {model!r} has non-square patches {tuple(patch)}; only square patches are supported"
            )
        patch = patch[0]
    return int(patch)


# -- Hugging Face checkpoints ----------------------------------------------------------------------------


def resolve_hf_source(model: str, example: str) -> tuple[str, bool]:
    """What to hand ``from_pretrained``, and whether it is a local directory."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModusegError(
                f"model {model!r} is not a checkpoint directory (no config.json in it); point `model` at a folder "
                f"written by save_pretrained, or give a hub id such as {example!r}"
            )
        return str(path), True
    if looks_like_path(model):
        raise ModusegError(
            f"model directory {model!r} does not exist; point `model` at a folder written by save_pretrained, "
            f"or give a hub id such as {example!r}"
        )
    return model, False


def hub_fix(model: str, alternatives: str = "point `model` at a local checkpoint directory") -> str:
    return (
        f"download it on a connected machine (e.g. `hf download {model}`) and copy the Hugging Face cache here, "
        + alternatives
    )


@contextlib.contextmanager
def _no_transformers_bars():
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_hf_model(
    model: str,
    source: str,
    local: bool,
    *,
    loader: Callable[[str], Any],
    encoder: str,
    supported: Sequence[str],
    example: str,
    fix: str | None = None,
) -> Any:
    """``loader(source)`` with one-line errors, then check the checkpoint's ``model_type``.
    transformers' "Loading weights" bar is switched off: a command's stderr carries its own lines only."""
    try:
        with _no_transformers_bars():
            loaded = loader(source)
    except ModusegError:
        raise
    except Exception as exc:  # hub unreachable and not cached, gated repo, corrupt files...
        if local:
            raise ModusegError(
                f"could not load the checkpoint directory {model!r} ({short_reason(exc)}); re-create it with "
                f"save_pretrained, or use a hub id such as {example!r}"
            ) from exc
        raise ModusegError(
            f"could not load model {model!r} from the Hugging Face hub or its local cache ({short_reason(exc)}); "
            + (fix or hub_fix(model))
        ) from exc
    model_type = getattr(loaded.config, "model_type", "?")
    if model_type not in supported:
        raise ModusegError(
            f"model {model!r} is a {model_type!r} checkpoint; the {encoder} encoder needs "
            f"{' or '.join(map(repr, supported))}, e.g. {example!r}"
        )
    return loaded


# -- the encoder base ------------------------------------------------------------------------------------


class PatchEncoder:
    """Size policy, normalisation, padding, device/dtype and batching around a ``_forward``.

    A subclass sets ``patch_size``, ``dim`` and (optionally) ``pad_multiple`` and
    calls ``_set_normalisation`` in its ``__init__``, then implements ``_forward``.
    """

    name = "?"
    #: padded sizes are multiples of this (the patch size unless a model needs more)
    pad_multiple: int | None = None
    patch_size: int
    dim: int

    def __init__(self, options: Any):
        self.options = options
        self.model_id = options.model
        self.device = resolve_device(options.device, f"encoder {self.name!r}")
        self.dtype = torch_dtype(options.dtype)
        self.resize = options.resize
        self.batch_size = options.batch_size
        # torch.compile wraps lazily: the model a subclass sets up later is what gets compiled
        self._run = torch.compile(self._forward, dynamic=True) if getattr(options, "compile", False) else self._forward
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    def _set_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Per-channel statistics applied before padding; None = the model normalises ``[0, 1]`` input itself."""
        if mean is None:
            self._mean = self._std = None
            return
        self._mean = torch.tensor(tuple(mean), dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(tuple(std), dtype=torch.float32, device=self.device).view(3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_id!r}, layers={list(self.options.layers)}, "
            f"patch={self.patch_size}, dim={self.dim}, device={self.device}, dtype={self.options.dtype})"
        )

    # -- preprocessing ------------------------------------------------------------------------------

    def geometry(self, image: np.ndarray) -> Geometry:
        """Where the image's pixels land on the patch grid (no model call)."""
        height, width = check_image(image, f"encoder {self.name!r}").shape[:2]
        new_h, new_w = target_size(height, width, self.resize)
        multiple = self.pad_multiple or self.patch_size
        padded = (-(-new_h // multiple) * multiple, -(-new_w // multiple) * multiple)
        return Geometry((height, width), (new_h, new_w), padded, self.patch_size)

    def batch_key(self, image: np.ndarray) -> tuple[int, int]:
        """Images with the same padded size share forward passes (``encode_batch``): the pipeline groups them."""
        return self.geometry(image).padded_hw

    def _prepare(self, image: np.ndarray, geometry: Geometry) -> torch.Tensor:
        """uint8 H×W×3 → (normalised,) padded float32 3×ph×pw on the device."""
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")  # torch wants a writable buffer (PIL arrays are read-only)
        x = torch.from_numpy(image).to(self.device)
        x = x.permute(2, 0, 1).to(torch.float32).div_(255.0)
        new_h, new_w = geometry.resized_hw
        if (new_h, new_w) != geometry.image_hw:
            x = F.interpolate(x[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
        if self._mean is not None:
            x = (x - self._mean) / self._std
        pad_h, pad_w = geometry.padded_hw[0] - new_h, geometry.padded_hw[1] - new_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
        return x

    # -- the model ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def eager(self) -> Any:
        """Within the block the plain (uncompiled) forward pass runs, e.g. for torch's FLOP counter,
        which a ``torch.compile`` graph bypasses (``moduseg bench``'s floor)."""
        compiled, self._run = self._run, self._forward
        try:
            yield self
        finally:
            self._run = compiled

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """float32 B×3×ph×pw → B×(h·w)×C patch tokens (row-major, no prefix tokens), any float dtype."""
        raise NotImplementedError

    def _tokens(self, pixels: torch.Tensor, grid_hw: tuple[int, int]) -> np.ndarray:
        """B×3×ph×pw → float32 B×h×w×C."""
        with torch.inference_mode():
            tokens = self._run(pixels)
            grid_h, grid_w = grid_hw
            if tokens.ndim != 3 or tokens.shape[1] != grid_h * grid_w:
                raise ModusegError(
                    f"model {self.model_id!r} gave patch tokens of shape {tuple(tokens.shape)} for a "
                    f"{grid_h}×{grid_w} grid; check the installed library version"
                )
            tokens = tokens.to(torch.float32).reshape(tokens.shape[0], grid_h, grid_w, tokens.shape[2])
            return tokens.cpu().numpy().astype(np.float32, copy=False)

    # -- FeatureEncoder -----------------------------------------------------------------------------

    def encode(self, image: np.ndarray) -> FeatureMap:
        geometry = self.geometry(image)
        tokens = self._tokens(self._prepare(image, geometry)[None], geometry.grid_hw)
        return FeatureMap(np.ascontiguousarray(tokens[0]), geometry)

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[FeatureMap]:
        """Images whose padded sizes are equal share forward passes (``batch_size`` at a time)."""
        images = list(images)
        geometries = [self.geometry(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, geometry in enumerate(geometries):
            groups.setdefault(geometry.padded_hw, []).append(i)
        results: list[FeatureMap | None] = [None] * len(images)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                pixels = torch.stack([self._prepare(images[i], geometries[i]) for i in chunk])
                tokens = self._tokens(pixels, geometries[chunk[0]].grid_hw)
                for row, i in enumerate(chunk):
                    results[i] = FeatureMap(np.ascontiguousarray(tokens[row]), geometries[i])
        return results  # type: ignore[return-value]


class HFViTEncoder(PatchEncoder):
    """A ``transformers`` ViT whose ``hidden_states`` are ``[prefix tokens, patch tokens]`` per block.

    ``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` block i's
    output; the selected blocks go through ``final_norm`` (when ``norm``), lose their
    ``prefix_tokens`` (CLS, registers) and are averaged.
    """

    #: keyword arguments for the model's forward besides pixel_values (e.g. interpolate_pos_encoding)
    forward_kwargs: dict[str, Any] = {}

    def _setup_model(self, model: torch.nn.Module, *, final_norm: torch.nn.Module, prefix_tokens: int) -> None:
        model.eval().requires_grad_(False)
        self.model = model.to(device=self.device, dtype=self.dtype)
        config = model.config
        self.final_norm = final_norm
        self.patch_size = square_patch(config.patch_size, self.model_id)
        self.dim = int(config.hidden_size)
        self.depth = int(config.num_hidden_layers)
        self.prefix_tokens = int(prefix_tokens)
        self.norm = self.options.norm
        self.layers = resolve_layers(self.options.layers, self.depth, self.model_id, self.name)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        output = self.model(pixel_values=pixels.to(self.dtype), output_hidden_states=True, **self.forward_kwargs)
        hidden = output.hidden_states
        if hidden is None or len(hidden) != self.depth + 1:
            raise ModusegError(
                f"model {self.model_id!r} returned {0 if hidden is None else len(hidden)} hidden states, "
                f"expected {self.depth + 1}; check the installed transformers version"
            )
        total = None
        for index in self.layers:
            states = hidden[index]
            if self.norm:
                states = self.final_norm(states)
            states = states[:, self.prefix_tokens :, :].to(torch.float32)
            total = states if total is None else total + states
        return total / len(self.layers) if len(self.layers) > 1 else total

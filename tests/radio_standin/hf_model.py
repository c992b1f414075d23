"""A stand-in for NVIDIA RADIO's published model code — for tests only, NOT RADIO.

RADIO's real code (github.com/NVlabs/RADIO; the ``hf_model.py`` of nvidia/C-RADIOv4-*) cannot
be installed here and its weights cannot be downloaded, so the ``radio`` encoder is tested
against this small random-weight ViT that follows RADIO's documented call interface:

* ``model(x)`` takes ``B×3×H×W`` in ``[0, 1]``, normalises it with its own input conditioner
  (OpenAI CLIP statistics, like RADIO's default conditioner), refuses sizes that are not
  multiples of ``min_resolution_step``, and returns ``RadioOutput(summary B×C, features B×T×D)``;
* ``patch_size``, ``max_resolution``, ``preferred_resolution``, ``window_size``,
  ``min_resolution_step``, ``get_nearest_supported_resolution``, ``make_preprocessor_external``,
  ``blocks``, ``forward_intermediates(x, indices, return_prefix_tokens, norm, stop_early,
  output_fmt, intermediates_only)`` with 0-based block indices;
* the Hugging Face wrapper ``RADIOModel`` (loaded with ``trust_remote_code``) keeps the model
  in ``.radio_model`` and forwards ``model(x)`` to it, as the published wrapper does.

Position information is a learned grid resized to the input's patch grid (RADIO's CPE is a
cropped/resized table too), with summary (CLS) and register tokens in front of the patches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class RadioOutput(NamedTuple):
    summary: torch.Tensor
    features: torch.Tensor


class Resolution(NamedTuple):
    height: int
    width: int


class InputConditioner(nn.Module):
    """Normalises [0, 1] input; like RADIO's, it casts to ``dtype`` (the checkpoint's) when one is set."""

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, dtype=None):
        super().__init__()
        self.dtype = dtype
        self.register_buffer("norm_mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(std).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.norm_mean) / self.norm_std
        return y if self.dtype is None else y.to(self.dtype)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, patch_size: int, num_cls: int, num_registers: int):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = dim
        self.num_cls_tokens = num_cls
        self.num_summary_tokens = num_cls + num_registers
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos_grid = nn.Parameter(0.5 * torch.randn(1, dim, 8, 8))
        self.prefix = nn.Parameter(0.5 * torch.randn(1, num_cls + num_registers, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x)
        pos = F.interpolate(
            self.pos_grid.to(patches.dtype), size=patches.shape[-2:], mode="bilinear", align_corners=False
        )
        patches = (patches + pos).flatten(2).transpose(1, 2)
        return torch.cat([self.prefix.to(patches.dtype).expand(x.shape[0], -1, -1), patches], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class RADIOBase(nn.Module):
    """Follows ``radio.radio_model.RADIOModel``'s public interface."""

    def __init__(self, dim=32, depth=3, heads=2, patch_size=16, num_cls=2, num_registers=2, max_resolution=2048):
        super().__init__()
        self.model = TinyViT(dim, depth, heads, patch_size, num_cls, num_registers)
        self.input_conditioner = InputConditioner()
        self._patch_size = patch_size
        self._max_resolution = max_resolution
        self._preferred_resolution = Resolution(512, 512)
        self._window_size = None

    @property
    def patch_size(self) -> int:
        return self._patch_size

    @property
    def max_resolution(self) -> int:
        return self._max_resolution

    @property
    def preferred_resolution(self) -> Resolution:
        return self._preferred_resolution

    @property
    def window_size(self):
        return self._window_size

    @property
    def min_resolution_step(self) -> int:
        return self._patch_size * (self._window_size or 1)

    @property
    def blocks(self):
        return self.model.blocks

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    def make_preprocessor_external(self):
        conditioner = self.input_conditioner
        self.input_conditioner = nn.Identity()
        return conditioner

    def get_nearest_supported_resolution(self, height: int, width: int) -> Resolution:
        step = self.min_resolution_step
        return Resolution(max(step, round(height / step) * step), max(step, round(width / step) * step))

    def _check(self, x: torch.Tensor) -> None:
        step = self.min_resolution_step
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(f"The input resolution must be a multiple of `self.min_resolution_step={step}`")

    def forward(self, x: torch.Tensor, feature_fmt: str = "NLC") -> RadioOutput:
        self._check(x)
        y = self.model.forward_features(self.input_conditioner(x))
        summary = y[:, : self.model.num_cls_tokens].flatten(1)
        features = y[:, self.model.num_summary_tokens :]
        if feature_fmt == "NCHW":
            h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            features = features.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return RadioOutput(summary, features)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **unused,
    ):
        self._check(x)
        n = len(self.model.blocks)
        if indices is None:
            indices = n
        take = sorted(range(n - indices, n) if isinstance(indices, int) else {n + i if i < 0 else i for i in indices})
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        y = self.model.embed(self.input_conditioner(x))
        outputs = []
        for i, block in enumerate(self.model.blocks):
            y = block(y)
            if i in take:
                z = self.model.norm(y) if norm else y
                prefix, feats = z[:, : self.model.num_cls_tokens], z[:, self.model.num_summary_tokens :]
                if output_fmt == "NCHW":
                    feats = feats.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
                outputs.append((prefix, feats) if return_prefix_tokens else feats)
        if intermediates_only:
            return outputs
        return self.forward(x, feature_fmt=output_fmt), outputs


class RADIOConfig(PretrainedConfig):
    model_type = "radio_standin"

    def __init__(
        self, dim=32, depth=3, heads=2, patch_size=16, num_cls=2, num_registers=2, max_resolution=2048, **kwargs
    ):
        self.dim, self.depth, self.heads = dim, depth, heads
        self.patch_size, self.num_cls, self.num_registers = patch_size, num_cls, num_registers
        self.max_resolution = max_resolution
        super().__init__(**kwargs)


class RADIOModel(PreTrainedModel):
    """Follows the published Hugging Face wrapper: the model lives in ``.radio_model``."""

    config_class = RADIOConfig

    def __init__(self, config: RADIOConfig):
        super().__init__(config)
        self.radio_model = RADIOBase(
            config.dim, config.depth, config.heads, config.patch_size, config.num_cls, config.num_registers,
            config.max_resolution,
        )
        self.post_init()

    def _init_weights(self, module):  # keep the random construction-time weights
        pass

    @property
    def patch_size(self) -> int:
        return self.radio_model.patch_size

    @property
    def max_resolution(self) -> int:
        return self.radio_model.max_resolution

    @property
    def preferred_resolution(self) -> Resolution:
        return self.radio_model.preferred_resolution

    @property
    def window_size(self):
        return self.radio_model.window_size

    @property
    def min_resolution_step(self) -> int:
        return self.radio_model.min_resolution_step

    def make_preprocessor_external(self):
        return self.radio_model.make_preprocessor_external()

    def get_nearest_supported_resolution(self, height: int, width: int) -> Resolution:
        return self.radio_model.get_nearest_supported_resolution(height, width)

    def forward(self, x: torch.Tensor):
        return self.radio_model.forward(x)

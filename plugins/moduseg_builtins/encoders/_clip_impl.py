"""``ClipEncoder``: dense patch tokens of an open_clip ``VisionTransformer``.

open_clip's own forward pools the tokens into one image vector, and adds a position
table sized for its training resolution. This encoder runs the same modules itself
so any padded size works and the patch tokens are kept:

1. ``conv1`` patch embedding of the normalised, zero-padded image (open_clip's
   preprocessing mean/std of the checkpoint; OpenAI CLIP's when it names none);
2. the class token is prepended and the position table is added, its patch grid
   resized bicubically (antialiased, ``align_corners=False``, as open_clip's own
   ``resize_pos_embed`` does when it loads a checkpoint at another size) from the
   native grid (e.g. 14×14 for ViT-B-16 at 224) to the image's padded grid;
3. ``patch_dropout`` (identity at inference) and ``ln_pre``, then the residual
   blocks up to the deepest selected one;
4. per selected block: ``ln_post`` (with ``norm``; the same final layer norm open_clip
   applies before pooling), the class token dropped, and with ``project`` the visual
   projection ``proj`` (width → joint image-text dim); several blocks are averaged.

So with the defaults (``layers=[-1]``, ``norm=True``, ``project=False``) the tokens
are exactly what open_clip's ``VisionTransformer`` pools (its ``tokens`` output), of
the transformer width; with ``project=True`` they live in the joint space where text
embeddings are compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moduseg_core import ModusegError
from moduseg_core.contract.errors import did_you_mean

from .._shared import short_reason
from ._vit_common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchEncoder, resolve_layers, square_patch
from .clip import ClipOptions

SCHEMAS = ("hf-hub:", "local-dir:")
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def _check_local_dir(model: str) -> None:
    directory = Path(model[len("local-dir:") :]).expanduser()
    if not directory.is_dir():
        raise ModusegError(
            f"encoder 'clip' model {model!r}: that folder does not exist; point local-dir: at a folder holding "
            "open_clip_config.json and open_clip_model.safetensors (or .bin)"
        )
    if not (directory / "open_clip_config.json").is_file():
        raise ModusegError(
            f"encoder 'clip' model {model!r} has no open_clip_config.json; local-dir: needs the hub layout "
            "(open_clip_config.json with model_cfg, plus open_clip_model.safetensors or .bin)"
        )
    if not any(p.suffix in CHECKPOINT_SUFFIXES for p in directory.iterdir()):
        raise ModusegError(
            f"encoder 'clip' model {model!r} holds no weights file (*.safetensors, *.bin, *.pth); "
            "copy the checkpoint next to open_clip_config.json"
        )


def load_clip(model: str, pretrained: str | None) -> torch.nn.Module:
    """An open_clip model by architecture + tag/file, or from an ``hf-hub:``/``local-dir:`` source."""
    import open_clip

    kwargs: dict[str, Any] = {}
    hub_repo = model[len("hf-hub:") :] if model.startswith("hf-hub:") else None
    if model.startswith(SCHEMAS):
        if model.startswith("local-dir:"):
            _check_local_dir(model)
        pretrained = None  # the source carries its own weights
    else:
        name = model.replace("/", "-")  # open_clip's own spelling rule
        known = open_clip.list_models()
        if name not in known:
            raise ModusegError(
                f"encoder 'clip' model {model!r} is not an open_clip architecture{did_you_mean(name, known)} "
                "(see open_clip.list_models(); or use hf-hub:ORG/REPO or local-dir:PATH); fix --set encoder.model"
            )
        if pretrained is None:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ModusegError(
                f"encoder 'clip' model {model!r} with pretrained=None would have random weights; set "
                f"encoder.pretrained to a tag ({', '.join(tags) or 'none known'}) or a checkpoint file"
            )
        tag = open_clip.get_pretrained_cfg(name, pretrained)
        if tag:
            hub_repo = (tag.get("hf_hub") or "").strip("/") or None
            if tag.get("quick_gelu", False):
                kwargs["force_quick_gelu"] = True  # the weights were trained with QuickGELU (MetaCLIP, OpenAI)
        elif Path(pretrained).expanduser().is_file():
            pretrained = str(Path(pretrained).expanduser())
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ModusegError(
                f"encoder 'clip' pretrained={pretrained!r} is neither a tag of {name} "
                f"(tags: {', '.join(tags) or 'none'}) nor a checkpoint file; fix --set encoder.pretrained"
            )
    try:
        return open_clip.create_model(model, pretrained=pretrained, device="cpu", **kwargs)
    except Exception as exc:  # hub unreachable, corrupt file, mismatched checkpoint...
        fetch = f" (e.g. `hf download {hub_repo}`)" if hub_repo else ""
        raise ModusegError(
            f"encoder 'clip' could not load {model!r} with pretrained={pretrained!r} ({short_reason(exc)}); download "
            "the "
            f"weights on a connected machine{fetch} and copy the Hugging Face cache here, pass the checkpoint file "
            "as encoder.pretrained, or use local-dir:PATH"
        ) from exc


class ClipEncoder(PatchEncoder):
    """Dense open_clip ViT patch tokens; see ``ClipOptions``."""

    name = "clip"

    def __init__(self, options: ClipOptions):
        super().__init__(options)
        from open_clip.transformer import VisionTransformer

        clip = load_clip(options.model, options.pretrained)
        visual = clip.visual
        del clip  # the text tower is not needed
        if not isinstance(visual, VisionTransformer):
            raise ModusegError(
                f"encoder 'clip' model {options.model!r} has a {type(visual).__name__} vision tower; this encoder "
                "reads open_clip's own VisionTransformer (CLIP, MetaCLIP, DFN... ViTs); "
                "for SigLIP use the siglip encoder"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise ModusegError(
                f"encoder 'clip' model {options.model!r} pools with attention (CoCa-style); its tokens are not "
                "patch tokens: pick a CLIP ViT such as ViT-B-16"
            )
        self.project = options.project
        if self.project and getattr(visual, "proj", None) is None:
            raise ModusegError(
                f"encoder 'clip' model {options.model!r} has no visual projection; set encoder.project=false"
            )
        visual.eval().requires_grad_(False)
        self.visual = visual.to(device=self.device, dtype=self.dtype)
        self.patch_size = square_patch(visual.patch_size, options.model)
        self.native_grid = tuple(int(g) for g in visual.grid_size)
        self.width = int(visual.conv1.out_channels)
        self.dim = int(visual.proj.shape[1]) if self.project else self.width
        self.depth = len(visual.transformer.resblocks)
        self.norm = options.norm
        self.layers = resolve_layers(options.layers, self.depth, options.model, self.name)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self._set_normalisation(cfg.get("mean", OPENAI_CLIP_MEAN), cfg.get("std", OPENAI_CLIP_STD))
        self._positions_cache: dict[tuple[int, int], torch.Tensor] = {}

    def positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The position table for a ``grid_h``×``grid_w`` patch grid: ``(1 + h·w)×width`` (class token first)."""
        key = (grid_h, grid_w)
        cached = self._positions_cache.get(key)
        if cached is not None:
            return cached
        table = self.visual.positional_embedding
        native_h, native_w = self.native_grid
        if key == (native_h, native_w):
            result = table
        else:
            grid = table[1:].to(torch.float32).reshape(1, native_h, native_w, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=key, mode="bicubic", antialias=True, align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
            result = torch.cat([table[:1].to(torch.float32), grid]).to(table.dtype)
        if len(self._positions_cache) >= 64:
            self._positions_cache.clear()
        self._positions_cache[key] = result
        return result

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual.conv1(pixels.to(self.dtype))  # B×width×h×w
        batch, _, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positions(grid_h, grid_w).to(x.dtype)
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        total = None
        for index, block in enumerate(visual.transformer.resblocks[: max(self.layers)], start=1):
            x = block(x, attn_mask=None)
            uses = self.layers.count(index)
            if not uses:
                continue
            tokens = x if batch_first else x.transpose(0, 1)
            if self.norm:
                tokens = visual.ln_post(tokens)
            tokens = tokens[:, 1:, :]
            if self.project:
                tokens = tokens @ visual.proj
            tokens = tokens.to(torch.float32) * uses
            total = tokens if total is None else total + tokens
        return total / len(self.layers) if len(self.layers) > 1 else total

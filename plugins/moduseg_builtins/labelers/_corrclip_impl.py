"""``CorrClipLabeler``: CLIP logits whose last block is rebuilt from DINO correlations and masks.

Per image (docs/labelers.md has the rule in words; ``_corrclip_parts`` the pieces):

1. the proposer's masks (score ≥ ``min_score``) become an instance map; the image is resized so its
   shorter side is ``short_side`` (longer side at most ``max_long_side``), the map with it (nearest);
2. sliding windows of ``crop`` px every ``stride`` px, each zero-padded on both sides to a multiple of
   ``pad_multiple`` (the map padded with an id of its own). Per window:
   a. DINO: query + key of the last block's input, L2-normalised → patch similarity ``S``;
   b. masks on the DINO grid, similar masks merged (DBSCAN), ``S`` restricted to within regions →
      attention ``A = softmax(tau·S)``;
   c. CLIP up to its last block, with one extra class token per region that sees only its region;
   d. last block: main branch ``A·v(x)``, spatial branch ``A·v(mean of the lower blocks)`` (v resized to
      the DINO grid), semantic branch = the region token of each patch's region after the full block;
      each through ``ln_post``, ``main + alpha·spatial + beta·semantic``, projected, L2-normalised;
   e. cosine with every prompt → upsampled to the window;
3. window cosines averaged, resized to the image, × ``logit_scale``, softmax over background words and
   the names of the image's labels; a class's probability is its best name's; argmax (below
   ``prob_threshold`` → background);
4. every region of the instance map takes its most frequent class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from moduseg_core import ModusegError
from moduseg_core.contract.types import Sample

from .._shared import check_image
from ..encoders._vit_common import load_hf_model, resolve_hf_source
from . import _corrclip_parts as parts
from ._clip_impl import ClipLabeler, window_starts
from ._common import build_part, check_labels
from .corrclip import CorrClipLabelerOptions

NAME = "corrclip"
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class CorrClipLabeler(ClipLabeler):
    """Pseudo masks from CLIP guided by DINO correlations and class-agnostic masks (the paper's labeler)."""

    name = NAME

    def __init__(self, options: CorrClipLabelerOptions):
        super().__init__(options)
        self.dino, self.dino_patch = self._load_dino(options.dino)
        self._dino_mean = torch.tensor(_IMAGENET[0], device=self.device).view(3, 1, 1)
        self._dino_std = torch.tensor(_IMAGENET[1], device=self.device).view(3, 1, 1)
        blocks = self.visual.transformer.resblocks
        try:
            self.spatial = parts.spatial_blocks(len(blocks), options.spatial_blocks)
        except ValueError as exc:
            raise ModusegError(
                f"labeler {NAME!r} model {options.model!r}: {exc}; use a deeper CLIP (e.g. ViT-B-16)"
            ) from exc

    def _make_corrector(self):
        o = self.options
        return build_part(NAME, "proposer", "proposer", o.proposer, o.proposer_options)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"CorrClipLabeler(model={o.model!r}, pretrained={o.pretrained!r}, dino={o.dino!r}, "
            f"proposer={o.proposer!r}, device={self.device})"
        )

    # -- DINO ------------------------------------------------------------------------------------

    def _load_dino(self, model: str) -> tuple[torch.nn.Module, int]:
        from transformers import ViTModel

        source, local = resolve_hf_source(model, "facebook/dino-vitb8")
        loaded = load_hf_model(
            model, source, local, loader=lambda s: ViTModel.from_pretrained(s, add_pooling_layer=False),
            encoder=f"labeler {NAME!r} dino", supported=("vit",), example="facebook/dino-vitb8",
        )
        loaded.eval().requires_grad_(False)
        patch = loaded.config.patch_size
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        if self.options.pad_multiple % patch:
            raise ModusegError(
                f"labeler {NAME!r} option pad_multiple={self.options.pad_multiple} is not a multiple of the DINO "
                f"patch size {patch}; set --set labeler.pad_multiple={patch * 7}"
            )
        return loaded.to(device=self.device, dtype=self.dtype), patch

    def _dino_layers(self) -> Sequence[torch.nn.Module]:
        layers = getattr(self.dino, "layers", None)
        if layers is None:  # transformers 4.x: model.encoder.layer
            layers = self.dino.encoder.layer
        return layers

    def dino_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``3×H×W`` in [0, 1] → the last block's query + key per patch (``h×w×C``), L2-normalised."""
        x = ((pixels - self._dino_mean) / self._dino_std)[None].to(self.dtype)
        emb = self.dino.embeddings
        tokens = emb.patch_embeddings.projection(x).flatten(2).transpose(1, 2)  # any size (no size check)
        grid_h, grid_w = x.shape[2] // self.dino_patch, x.shape[3] // self.dino_patch
        pos = emb.position_embeddings[0]
        side = int(round((pos.shape[0] - 1) ** 0.5))
        grid = pos[1:].reshape(side, side, -1).permute(2, 0, 1)
        grid = parts.resize_grid(grid, (grid_h, grid_w)).permute(1, 2, 0).reshape(grid_h * grid_w, -1)
        h = torch.cat([emb.cls_token.to(tokens.dtype), tokens], dim=1) + torch.cat([pos[:1], grid])[None].to(
            tokens.dtype
        )
        layers = self._dino_layers()
        for layer in layers[:-1]:
            out = layer(h)
            h = out[0] if isinstance(out, tuple) else out
        last = layers[-1]
        y = last.layernorm_before(h)
        attention = last.attention
        if hasattr(attention, "q_proj"):
            q, k = attention.q_proj(y), attention.k_proj(y)
        else:  # transformers 4.x
            q, k = attention.attention.query(y), attention.attention.key(y)
        feats = F.normalize((q + k)[0, 1:].float(), dim=-1)
        return feats.reshape(grid_h, grid_w, -1)

    # -- CLIP with the three branches --------------------------------------------------------------

    def _blocks(self, x: torch.Tensor, block: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
        first = getattr(self.visual.transformer, "batch_first", True)
        if first:
            return block(x, attn_mask=mask)
        return block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)

    def window_features(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One padded window (``3×H×W`` in [0, 1], region ids ``H×W``) → ``h×w×D`` L2-normalised features on
        the DINO grid."""
        o = self.options
        dino = self.dino_features(pixels)
        dh, dw = dino.shape[:2]
        flat = dino.reshape(dh * dw, -1)
        similarity = flat @ flat.T
        ids_dino = parts.merge_regions(parts.resize_ids(ids, (dh, dw)), dino, o.merge_eps, o.merge_min_samples)
        attention = parts.scope_attention(similarity, ids_dino.reshape(-1), o.tau).to(self.dtype)

        v = self.visual
        x = v.conv1(((pixels - self._mean) / self._std)[None].to(self.dtype))
        _, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        pos = v.positional_embedding
        g0, g1 = v.grid_size
        grid = parts.resize_grid(pos[1:].reshape(g0, g1, -1).permute(2, 0, 1), (gh, gw))
        pos = torch.cat([pos[:1], grid.permute(1, 2, 0).reshape(gh * gw, -1)])
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype))

        ids_clip = parts.resize_ids(ids_dino, (gh, gw))
        values, owner = torch.unique(ids_clip.reshape(-1), return_inverse=True)
        regions = owner[None, :] == torch.arange(len(values), device=owner.device)[:, None]
        count = len(values)
        mask = parts.semantic_attention_mask(regions, x.dtype)
        seq = torch.cat([x[:, :1].expand(1, count, width), x], dim=1)
        blocks = v.transformer.resblocks
        spatial = []
        for index, block in enumerate(blocks[:-1]):
            seq = self._blocks(seq, block, mask)
            if index in self.spatial:
                spatial.append(seq[:, count:])
        last = blocks[-1]
        both = torch.cat([seq[:, count:], torch.stack(spatial).mean(0)], dim=0)  # 2×(1+N)×width: main, spatial
        attn = last.attn
        bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        values_v = F.linear(last.ln_1(both), attn.in_proj_weight[2 * width :], bias)
        values_v = values_v[:, 1:].reshape(2, gh, gw, width).permute(0, 3, 1, 2)
        values_v = F.interpolate(values_v, size=(dh, dw), mode="bilinear", align_corners=False)
        values_v = values_v.flatten(2).transpose(1, 2)  # 2×L×width
        main_spatial = attn.out_proj(attention[None] @ values_v)
        tokens = self._blocks(seq, last, mask)[0, :count]  # the region tokens after the whole block
        owner_dino = parts.resize_ids(owner.reshape(gh, gw), (dh, dw)).reshape(-1)
        semantic = tokens[owner_dino]
        branches = v.ln_post(torch.cat([main_spatial, semantic[None]], dim=0))
        out = branches[0] + o.alpha * branches[1] + o.beta * branches[2]
        if v.proj is not None:
            out = out @ v.proj
        return F.normalize(out.float(), dim=-1).reshape(dh, dw, -1)

    # -- the map ----------------------------------------------------------------------------------

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        o = self.options
        if o.short_side is None:
            return height, width
        factor = o.short_side / min(height, width)
        if o.max_long_side is not None:
            factor = min(factor, o.max_long_side / max(height, width))
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def cosines(self, image: np.ndarray, ids: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
        """Cosine of every text row in ``rows`` per pixel (``T×H×W``, averaged over windows)."""
        o = self.options
        height, width = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        size = self._resized_size(height, width)
        ids_t = torch.from_numpy(ids).to(self.device)
        if size != (height, width):
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
            ids_t = parts.resize_ids(ids_t, size)
        rh, rw = size
        pad_id = int(ids_t.max()) + 1
        text = self.text[rows]
        total = torch.zeros((len(rows), rh, rw), device=self.device)
        count = torch.zeros((rh, rw), device=self.device)
        crop = o.crop
        mean = self._mean
        with torch.inference_mode():
            for top in window_starts(rh, crop, o.stride):
                for left in window_starts(rw, crop, o.stride):
                    win = x[:, top : top + crop, left : left + crop]
                    win_ids = ids_t[top : top + crop, left : left + crop]
                    h, w = win.shape[1:]
                    pl, pr, pt, pb = parts.symmetric_pad(h, w, o.pad_multiple)
                    if pl or pr or pt or pb:  # zero after CLIP's normalisation: the mean colour
                        win = F.pad(win - mean, (pl, pr, pt, pb)) + mean
                        win_ids = F.pad(win_ids, (pl, pr, pt, pb), value=pad_id)
                    feats = self.window_features(win, win_ids)  # h'×w'×D
                    cos = (feats @ text.T).permute(2, 0, 1)[None]
                    cos = F.interpolate(cos, size=win.shape[1:], mode="bilinear", align_corners=False)[0]
                    total[:, top : top + h, left : left + w] += cos[:, pt : pt + h, pl : pl + w]
                    count[top : top + h, left : left + w] += 1
            total = total / count
            if size != (height, width):
                total = F.interpolate(total[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return total

    def label(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        o = self.options
        labels = check_labels(sample, len(self.class_names), NAME, o.classes)
        image = check_image(image, f"labeler {NAME!r}", cast=True)
        proposals = self.corrector.propose(image, image_id=sample.id)
        if proposals.masks.shape[1:] != image.shape[:2]:
            raise ModusegError(
                f"labeler {NAME!r} proposer {o.proposer!r} gave {proposals.masks.shape[1:]} masks for a "
                f"{image.shape[:2]} image"
            )
        ids = parts.instance_map(proposals, o.min_score)
        wanted = [0, *labels]
        rows = np.flatnonzero(np.isin(self.owners, wanted))
        cos = self.cosines(image, ids, torch.from_numpy(rows).to(self.device))
        probs = (cos * o.logit_scale).softmax(dim=0)
        owners = torch.from_numpy(self.owners[rows]).to(self.device)
        per_class = torch.stack([probs[owners == c].amax(dim=0) for c in wanted])
        best, index = per_class.max(dim=0)
        classes = torch.as_tensor(wanted, device=self.device)[index]
        classes[best < o.prob_threshold] = 0
        return parts.correct_by_regions(classes.cpu().numpy().astype(np.int64), ids).astype(np.int32)

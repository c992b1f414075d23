"""SAM / SAM 2 mask decoder for a point grid, in two stages, for ``engine=fast``.

The libraries' mask decoder runs, per point prompt, a two-way transformer between the prompt's tokens
(7 or 8) and a copy of the image embedding (64×64 positions), then upscales the updated embedding
4× with transposed convolutions and takes a product with one hypernetwork vector per mask. On a
point grid this is ~1,000 copies of the same image. The two stages here:

1. **tokens** for every prompt: the transformer and the IoU head, so that every candidate's
   predicted IoU is known;
2. **masks** for the candidates the generator keeps after ``pred_iou_thresh`` (upscaling and
   hypernetworks on those prompts' embeddings).

``decoder="library"`` runs the library's own transformer module on the repeated image and upscales
every prompt in one batch, as the library does, so every number is the library's (a smaller batch of
convolutions may round differently): identical masks and scores (tests/test_sam_decoder.py,
tests/test_proposer_fast.py).

``decoder="factored"`` upscales only the kept candidates' prompts (a grid's prompts mostly fail the
IoU threshold; every prompt with ``every_low``, for SAM 2's mask-to-mask refinement) and computes the
same transformer with the image-side work done once or in a cheaper order, using only associativity and
linearity:

- the first block sees the *same* image for every prompt (the grid's prompts carry no mask input,
  so the dense prompt embedding is one vector for all): its image projections (token→image keys and
  values, image→token queries) are computed once, not per prompt;
- attention from a few tokens to the image: ``(x Wkᵀ + bk) qᵀ = x (Wk q)ᵀ + bk·q`` and, as softmax
  rows sum to 1, ``p (x Wvᵀ + bv) = (p x) Wvᵀ + bv`` — products with 56 token-head vectors instead
  of projecting all 4,096 positions to 128 channels;
- attention from the image to the tokens: the query projection folds into the tokens' keys the same
  way, and the output projection into the tokens' values (``Σₕ pₕ (vₕ Woₕᵀ)``).

Per prompt that is about 0.4 G multiply-adds instead of 1.7 G for SAM's decoder transformer. Float
sums are taken in another order, so logits differ from the library's by float rounding (measured in
tests/test_proposer_fast.py and docs/proposers.md: a few pixels per million flip at the mask threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DECODERS = ("factored", "library")


@dataclass
class TokenState:
    """Stage 1's output for a batch of prompts."""

    iou: Tensor  # (B, M) predicted IoU of the candidates the generator sees
    tokens: Tensor  # (B, T, C) the transformer's token outputs
    image: Tensor  # (B, N, C) the transformer's image outputs (one per prompt)
    size: tuple[int, int]  # the image embedding's (h, w)
    high_res: list[Tensor] | None  # SAM 2's high-resolution features (one image)
    low: Tensor | None = None  # (B, M, h, w) every candidate's mask logits when stage 1 computed them all


class TwoStageDecoder:
    """``tokens`` for every prompt, ``masks`` for the chosen candidates (flat index prompt × M + m)."""

    def __init__(self, decoder: Any, multimask: bool, factored: bool, every_low: bool = False):
        self.decoder = decoder
        self.multimask = multimask
        self.factored = factored
        #: stage 1 also returns every candidate's low-resolution logits (SAM 2's ``use_m2m`` refines each)
        self.every_low = every_low
        #: SAM 2 puts an object-score token before the IoU token
        self.first = 1 if getattr(decoder, "pred_obj_scores", False) else 0
        # SAM 2 without multimask output picks among all masks by their stability: every mask is needed
        self.every_mask = not multimask and bool(getattr(decoder, "dynamic_multimask_via_stability", False))

    # -- stage 1 -----------------------------------------------------------------------------------------

    def tokens(self, image: Tensor, pe: Tensor, sparse: Tensor, dense: Tensor,
               high_res: list[Tensor] | None = None) -> TokenState:
        d = self.decoder
        output = [d.iou_token.weight, d.mask_tokens.weight]
        if self.first:
            output.insert(0, d.obj_score_token.weight)
        tokens = torch.cat(output, dim=0).unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((tokens, sparse), dim=1)
        b, (_, h, w) = tokens.size(0), image.shape[1:]
        if self.factored:
            # the grid's dense prompt embedding is one vector for every prompt (no mask input)
            hs, keys = factored_transformer(d.transformer, image + dense[:1], pe, tokens)
        else:
            src = torch.repeat_interleave(image, b, dim=0) + dense
            hs, keys = d.transformer(src, torch.repeat_interleave(pe, b, dim=0), tokens)
        iou = d.iou_prediction_head(hs[:, self.first, :])
        state = TokenState(iou, hs, keys, (h, w), high_res)
        if self.every_mask:  # the library's choice needs each prompt's first mask: all prompts are upscaled
            logits = self._logits(state, torch.arange(b, device=hs.device))
            state.low, state.iou = d._dynamic_multimask_via_stability(logits, iou)
            return state
        chosen = slice(1, None) if self.multimask else slice(0, 1)
        state.iou = iou[:, chosen]
        if not self.factored or self.every_low:
            # as the library: every prompt upscaled in one batch (a smaller batch may round differently)
            state.low = self._logits(state, torch.arange(b, device=hs.device))[:, chosen]
        return state

    # -- stage 2 -----------------------------------------------------------------------------------------

    def masks(self, state: TokenState, chosen: Tensor) -> Tensor:
        """Low-resolution mask logits of the chosen candidates (flat indices into ``state.iou``), in that order."""
        m = state.iou.size(1)
        if state.low is not None:
            return state.low.flatten(0, 1)[chosen]
        prompts, slot = chosen // m, chosen % m
        unique, where = torch.unique(prompts, sorted=True, return_inverse=True)
        return self._logits(state, unique)[where, slot + (1 if self.multimask else 0)]

    def _logits(self, state: TokenState, prompts: Tensor) -> Tensor:
        """Every mask token's logits (P, masks, 4h, 4w) for the given prompts: upscaling and hypernetworks."""
        d = self.decoder
        h, w = state.size
        src = state.image[prompts].transpose(1, 2).reshape(len(prompts), -1, h, w)
        if not getattr(d, "use_high_res_features", False):
            up = d.output_upscaling(src)
        else:
            dc1, ln1, act1, dc2, act2 = d.output_upscaling
            feat_s0, feat_s1 = state.high_res
            up = act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)
        mask_tokens = state.tokens[prompts, self.first + 1 : self.first + 1 + d.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(d.output_hypernetworks_mlps)], dim=1)
        n, c, uh, uw = up.shape
        return (hyper @ up.view(n, c, uh * uw)).view(n, -1, uh, uw)


# -- the factored transformer -------------------------------------------------------------------------------


def _split(linear: torch.nn.Linear, heads: int) -> tuple[Tensor, Tensor]:
    """A projection's weight as (heads, d, in) and bias as (heads, d)."""
    out, inp = linear.weight.shape
    return linear.weight.view(heads, out // heads, inp), linear.bias.view(heads, out // heads)


def _heads(x: Tensor, heads: int) -> Tensor:
    b, t, i = x.shape
    return x.view(b, t, heads, i // heads).transpose(1, 2)  # (B, H, T, d)


def _tokens_to_image(attn: Any, q: Tensor, keys_pe: Tensor, keys: Tensor, shared: bool) -> Tensor:
    """``attn(q=q, k=keys_pe, v=keys)`` for a few tokens (B, T, C) attending to image positions."""
    heads = attn.num_heads
    qh = _heads(attn.q_proj(q), heads)  # (B, H, T, d)
    b, _, t, d = qh.shape
    scale = 1.0 / math.sqrt(d)
    if shared:  # one image (1, N, C) for every prompt: project it once, one product per head
        k = attn.k_proj(keys_pe)[0].view(-1, heads, d).permute(1, 2, 0)  # (H, d, N)
        v = attn.v_proj(keys)[0].view(-1, heads, d).transpose(0, 1)  # (H, N, d)
        per_head = qh.permute(1, 0, 2, 3).reshape(heads, b * t, d)
        p = torch.softmax(torch.bmm(per_head, k) * scale, dim=-1)  # (H, BT, N)
        out = torch.bmm(p, v).view(heads, b, t, d).permute(1, 0, 2, 3)  # (B, H, T, d)
    else:
        # k-projection folded into the queries; its bias adds one constant per softmax row, which cancels
        wk, _ = _split(attn.k_proj, heads)
        folded = torch.einsum("bhtd,hdc->bhtc", qh * scale, wk).reshape(b, heads * t, -1)
        p = torch.softmax(torch.bmm(folded, keys_pe.transpose(1, 2)), dim=-1)  # (B, HT, N)
        context = torch.bmm(p, keys).view(b, heads, t, -1)  # (B, H, T, C); v-projection after the sum
        wv, bv = _split(attn.v_proj, heads)
        out = torch.einsum("bhtc,hdc->bhtd", context, wv) + bv[None, :, None, :]
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, -1))


def _image_to_tokens(attn: Any, keys_pe: Tensor, q: Tensor, queries: Tensor, keys: Tensor, shared: bool) -> Tensor:
    """``keys + attn(q=keys_pe, k=q, v=queries)``: image positions (B or 1, N, C) attending to the tokens (B, T, C),
    with the residual."""
    heads = attn.num_heads
    kt = _heads(attn.k_proj(q), heads)  # (B, H, T, d)
    vt = _heads(attn.v_proj(queries), heads)
    b, _, t, d = kt.shape
    scale = 1.0 / math.sqrt(d)
    if shared:
        qi = attn.q_proj(keys_pe)[0].view(-1, heads, d).permute(1, 2, 0)  # (H, d, N)
        per_head = (kt * scale).permute(1, 0, 2, 3).reshape(heads, b * t, d)
        scores = torch.bmm(per_head, qi).view(heads, b, t, -1)
        p = torch.softmax(scores, dim=2).permute(1, 0, 2, 3).reshape(b, heads * t, -1)  # (B, HT, N)
    else:
        # q-projection folded into the tokens' keys (its bias varies along the tokens: it stays)
        wq, bq = _split(attn.q_proj, heads)
        folded = torch.einsum("bhtd,hdc->bhtc", kt * scale, wq).reshape(b, heads * t, -1)
        bias = torch.einsum("hd,bhtd->bht", bq, kt * scale).reshape(b, heads * t, 1)
        scores = torch.baddbmm(bias, folded, keys_pe.transpose(1, 2)).view(b, heads, t, -1)
        p = torch.softmax(scores, dim=2).view(b, heads * t, -1)  # (B, HT, N): softmax over each head's tokens
    # out-projection folded into the tokens' values; its bias spread over the heads (each head's weights sum to 1)
    wo = attn.out_proj.weight  # (C, I)
    values = torch.einsum("bhtd,chd->bhtc", vt, wo.view(wo.size(0), heads, d)).reshape(b, heads * t, -1)
    values = values + attn.out_proj.bias / heads
    # the shared image of the first block (1, N, C) gives a new (B, N, C) tensor; later blocks update the prompts'
    # own image tensors in place
    weights = p.transpose(1, 2)
    if p.dtype == values.dtype == keys.dtype:  # one precision: no (B, N, C) temporary
        return torch.baddbmm(keys, weights, values) if keys.size(0) == 1 else keys.baddbmm_(weights, values)
    # under autocast the product comes in the lower precision and is added to the float32 image, as the
    # library's residual is
    product = torch.bmm(weights, values)
    return keys + product if keys.size(0) == 1 else keys.add_(product)


def factored_transformer(transformer: Any, image: Tensor, pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """The library's ``TwoWayTransformer(image repeated per prompt, pe, tokens)`` for one image (1, C, h, w)
    and B prompts' tokens (B, T, C); returns (tokens (B, T, C), image (B, N, C)) as the library's."""
    pe = pe.flatten(2).transpose(1, 2)  # (1, N, C)
    keys = image.flatten(2).transpose(1, 2)  # (1, N, C): the same for every prompt until the first update
    queries, query_pe = tokens, tokens
    for block in transformer.layers:
        shared = keys.size(0) == 1
        if block.skip_first_layer_pe:
            queries = block.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + block.self_attn(q=q, k=q, v=queries)
        queries = block.norm1(queries)
        keys_pe = keys + pe
        queries = block.norm2(queries + _tokens_to_image(block.cross_attn_token_to_image, queries + query_pe,
                                                         keys_pe, keys, shared))
        queries = block.norm3(queries + block.mlp(queries))
        keys = block.norm4(_image_to_tokens(block.cross_attn_image_to_token, keys_pe, queries + query_pe, queries,
                                            keys, shared))  # (1, N, C) becomes (B, N, C) in the first block
    attn_out = _tokens_to_image(transformer.final_attn_token_to_image, queries + query_pe, keys + pe, keys,
                                keys.size(0) == 1)
    queries = transformer.norm_final_attn(queries + attn_out)
    if keys.size(0) == 1:  # a transformer without layers: every prompt sees the image as it came
        keys = keys.expand(queries.size(0), -1, -1)
    return queries, keys

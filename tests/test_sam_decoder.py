"""The two-stage SAM / SAM 2 mask decoder of ``engine=fast`` against the libraries' own modules (real
segment-anything and sam2 classes, random weights and random layer-norm affines): ``library`` is the same
arithmetic (identical), ``factored`` the same sums in another order (equal within float32 rounding)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("sam2")

import torch
from moduseg_builtins.proposers._sam_decoder import TwoStageDecoder, factored_transformer


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (biases and layer-norm affines included, which default to 0/1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


def transformer(library: str, depth: int, dim: int = 64, heads: int = 4) -> torch.nn.Module:
    if library == "sam":
        from segment_anything.modeling.transformer import TwoWayTransformer
    else:
        from sam2.modeling.sam.transformer import TwoWayTransformer
    return randomise(TwoWayTransformer(depth=depth, embedding_dim=dim, num_heads=heads, mlp_dim=2 * dim), depth)


@pytest.mark.parametrize("library", ["sam", "sam2"])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_factored_transformer_equals_the_library_transformer(library, depth):
    """One image repeated for 12 prompts of 7 tokens, 16×16 positions: the library's output within float32
    rounding (the largest difference relative to the values' spread)."""
    module = transformer(library, depth)
    g = torch.Generator().manual_seed(1)
    image, pe = torch.randn(1, 64, 16, 16, generator=g), torch.randn(1, 64, 16, 16, generator=g)
    tokens = torch.randn(12, 7, 64, generator=g)
    with torch.inference_mode():
        want_tokens, want_image = module(image.expand(12, -1, -1, -1), pe.expand(12, -1, -1, -1), tokens)
        got_tokens, got_image = factored_transformer(module, image, pe, tokens)
    assert got_tokens.shape == want_tokens.shape and got_image.shape == want_image.shape
    torch.testing.assert_close(got_tokens, want_tokens, rtol=0, atol=2e-5 * float(want_tokens.abs().max()))
    torch.testing.assert_close(got_image, want_image, rtol=0, atol=2e-5 * float(want_image.abs().max()))
    # the prompts differ: a factoring that mixed them up would not be close
    assert not torch.allclose(want_tokens[0], want_tokens[1])


def sam_decoder():
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import TwoWayTransformer

    return randomise(MaskDecoder(num_multimask_outputs=3, transformer_dim=64, transformer=TwoWayTransformer(
        depth=2, embedding_dim=64, num_heads=4, mlp_dim=128), iou_head_hidden_dim=64), 5)


def sam2_decoder(dynamic: bool):
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    return randomise(MaskDecoder(
        num_multimask_outputs=3, transformer_dim=64, iou_head_hidden_dim=64, use_high_res_features=True,
        pred_obj_scores=True, iou_prediction_use_sigmoid=True, dynamic_multimask_via_stability=dynamic,
        transformer=TwoWayTransformer(depth=2, embedding_dim=64, num_heads=4, mlp_dim=128)), 6)


@pytest.mark.parametrize("case", ["sam", "sam2 multimask", "sam2 single", "sam2 single dynamic"])
def test_two_stages_give_the_decoders_masks_and_ious(case):
    """Stage 1 for 10 prompts, stage 2 for every candidate and for a scattered few: ``library`` is the
    decoder module's output exactly, ``factored`` within rounding; the IoUs are what the generator sees."""
    g = torch.Generator().manual_seed(2)
    multimask = case in ("sam", "sam2 multimask")
    decoder = sam_decoder() if case == "sam" else sam2_decoder("dynamic" in case)
    image, pe = torch.randn(1, 64, 8, 8, generator=g), torch.randn(1, 64, 8, 8, generator=g)
    sparse = torch.randn(10, 2, 64, generator=g)
    dense = torch.randn(1, 64, 8, 8, generator=g).expand(10, -1, -1, -1)  # no mask input: one for all
    high_res = [torch.randn(1, 8, 32, 32, generator=g), torch.randn(1, 16, 16, 16, generator=g)]
    kwargs = {"high_res_features": high_res, "repeat_image": True} if case != "sam" else {}
    with torch.inference_mode():
        out = decoder(image_embeddings=image, image_pe=pe, sparse_prompt_embeddings=sparse,
                      dense_prompt_embeddings=dense, multimask_output=multimask, **kwargs)
        want_masks, want_iou = out[0].flatten(0, 1), out[1]
        for factored in (False, True):
            two = TwoStageDecoder(decoder, multimask, factored)
            state = two.tokens(image, pe, sparse, dense, None if case == "sam" else high_res)
            everything = torch.arange(state.iou.numel())
            few = torch.tensor([1, 4, 5, len(everything) - 1])
            if not factored:
                assert torch.equal(state.iou, want_iou)
                assert torch.equal(two.masks(state, everything), want_masks)
                assert torch.equal(two.masks(state, few), want_masks[few])
            else:
                torch.testing.assert_close(state.iou, want_iou, rtol=0, atol=1e-4)
                spread = float(want_masks.abs().max())
                torch.testing.assert_close(two.masks(state, everything), want_masks, rtol=0, atol=1e-4 * spread)
                torch.testing.assert_close(two.masks(state, few), want_masks[few], rtol=0, atol=1e-4 * spread)

"""``sam``: segment-anything's real ``SamAutomaticMaskGenerator`` on real coco-mini photos.

Running the real ViT-B at its 1024-pixel input takes about a minute per image on a 2-core CPU,
so masks come from a tiny ``Sam`` assembled from segment_anything's own modules (random weights,
256-pixel input); the checkpoint loader is exercised with a real random-initialised vit_b state
dict, by path and by URL. Random weights give meaningless masks: invariants are asserted."""

from __future__ import annotations

import inspect
from functools import partial

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")

import torch
from conftest import plugins_only, val_photos
from moduseg_builtins.proposers._sam_impl import SamProposer
from moduseg_builtins.proposers.sam import SamOptions
from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from moduseg_core import ModusegError, get_component
from moduseg_core.contract.options import parse_options

LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with plugins_only(
        "proposers",
        TORCH_HOME=str(tmp_path_factory.mktemp("torch-home")),  # a private, empty hub cache
    ):
        yield


@pytest.fixture(scope="module")
def images(coco_mini) -> list[np.ndarray]:
    """Two real photos at half size (the masks' cost grows with the pixels, not the model's input)."""
    return val_photos(coco_mini, 2, 2)


def tiny_sam(seed: int = 0, img_size: int = 256) -> Sam:
    """segment_anything's real Sam, at a small width and input size."""
    torch.manual_seed(seed)
    grid = img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=2,
            mlp_ratio=4,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    ).eval()


def options(**values) -> SamOptions:
    return parse_options("proposer", "sam", SamOptions, values)


def check_proposals(proposals, image):
    h, w = image.shape[:2]
    assert proposals.masks.dtype == np.bool_ and proposals.masks.shape[1:] == (h, w)
    assert proposals.scores.dtype == np.float32
    assert np.all((proposals.scores >= 0) & (proposals.scores <= 1))
    assert np.all(np.diff(proposals.scores) <= 0)


def test_options_are_the_generators_with_its_defaults():
    signature = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    exposed = set(SamOptions.model_fields) - {
        "model_type",
        "checkpoint",
        "device",
        "engine",
        "fast_decoder",
        "batch_size",
    }  # ours
    assert exposed == set(signature) - {"self", "model", "point_grids", "output_mode"}
    for name in exposed:
        assert SamOptions.model_fields[name].default == signature[name].default, name
    assert set(SamOptions.model_fields["model_type"].annotation.__args__) == set(sam_model_registry) - {"default"}


def test_masks_and_scores_on_real_images(images):
    proposer = SamProposer(options(**LOOSE), model=tiny_sam())
    for image in images:
        proposals = proposer.propose(image)
        check_proposals(proposals, image)
        assert len(proposals) >= 1
    # the score is the generator's predicted IoU (clipped to [0, 1]); the masks are its masks
    reference = SamAutomaticMaskGenerator(tiny_sam(), **LOOSE).generate(images[0])
    reference.sort(key=lambda r: -min(max(r["predicted_iou"], 0.0), 1.0))  # stable, as the proposer sorts
    proposals = proposer.propose(images[0])
    np.testing.assert_allclose(proposals.scores, np.clip([r["predicted_iou"] for r in reference], 0, 1), atol=1e-6)
    np.testing.assert_array_equal(proposals.masks, np.stack([r["segmentation"] for r in reference]))


def test_generator_thresholds_are_applied(images):
    image = images[1]
    loose = SamProposer(options(**LOOSE), model=tiny_sam()).propose(image)
    assert len(loose) >= 2
    cut = float(np.median(loose.scores))
    strict = SamProposer(options(**{**LOOSE, "pred_iou_thresh": cut}), model=tiny_sam()).propose(image)
    check_proposals(strict, image)
    assert len(strict) < len(loose) and np.all(strict.scores > cut)
    # a stricter grid: more prompts, at least as many masks before NMS, masks still image-sized
    denser = SamProposer(options(**{**LOOSE, "points_per_side": 6, "min_mask_region_area": 50}), model=tiny_sam())
    check_proposals(denser.propose(image), image)


@pytest.fixture(scope="module")
def vit_b_state(tmp_path_factory):
    """A real random-initialised vit_b state dict saved as a .pth, as the released files are."""
    path = tmp_path_factory.mktemp("sam-ckpt") / "sam_vit_b_random.pth"
    torch.manual_seed(1)
    state = sam_model_registry["vit_b"]().state_dict()
    torch.save(state, path)
    return path, state


def test_checkpoint_by_path_and_by_url_through_the_torch_hub_cache(vit_b_state, tmp_path, monkeypatch):
    path, state = vit_b_state
    proposer = get_component("proposer", "sam", model_type="vit_b", checkpoint=str(path), device="cpu")
    loaded = proposer.model.state_dict()
    for key in ("image_encoder.pos_embed", "mask_decoder.iou_prediction_head.layers.0.weight"):
        torch.testing.assert_close(loaded[key], state[key])
    # a URL is downloaded once with torch.hub's helper into <TORCH_HOME>/hub/checkpoints
    hub = tmp_path / "hub-home"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    proposer = get_component("proposer", "sam", model_type="vit_b", checkpoint=path.as_uri())
    cached = hub / "hub" / "checkpoints" / path.name
    assert cached.is_file() and cached.stat().st_size == path.stat().st_size
    torch.testing.assert_close(proposer.model.state_dict()["image_encoder.pos_embed"], state["image_encoder.pos_embed"])


def _one_line_error(**values) -> str:
    with pytest.raises(ModusegError) as info:
        get_component("proposer", "sam", **values)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_checkpoint_errors_are_one_line(tmp_path):
    message = _one_line_error(model_type="vit_b", checkpoint=str(tmp_path / "nope.pth"))
    assert "does not exist" in message and "sam_vit_b_01ec64.pth" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert "not a readable torch checkpoint" in _one_line_error(model_type="vit_b", checkpoint=str(garbage))
    tiny = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), tiny)
    message = _one_line_error(model_type="vit_b", checkpoint=str(tiny))
    assert "does not fit model_type='vit_b'" in message and "model_type=vit_b|vit_l|vit_h" in message
    message = _one_line_error(model_type="vit_b", checkpoint=(tmp_path / "absent" / "sam.pth").as_uri())
    assert "could not download" in message and "checkpoint=/path/to/sam.pth" in message


def test_option_errors_are_one_line():
    assert "points_per_side" in _one_line_error(points_per_side=0)
    assert "model_type" in _one_line_error(model_type="vit_x")
    assert "device" in _one_line_error(device="gpu")
    assert "box_nms_thresh" in _one_line_error(box_nms_thresh=0)
    proposer = SamProposer(options(**LOOSE), model=tiny_sam())
    with pytest.raises(ModusegError, match=r"proposer 'sam' got an image of shape \(20, 20\)"):
        proposer.propose(np.zeros((20, 20), np.uint8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_a_gpu():
    with pytest.raises(ModusegError, match="asks for CUDA"):
        SamProposer(options(device="cuda"), model=tiny_sam())

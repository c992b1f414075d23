"""The ``clip`` encoder against open_clip itself: a tiny random-weight open_clip CLIP saved in the
hub layout (open_clip_config.json + open_clip_model.safetensors) and run by open_clip's own
VisionTransformer on real photos — at the training size, and at other sizes with the position
table resized by open_clip's own ``resize_pos_embed`` (``force_image_size``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

import encoder_checkpoints as ec
import torch

from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

MEAN_STD = (tuple(ec.CLIP_PREPROCESS["mean"]), tuple(ec.CLIP_PREPROCESS["std"]))


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def image(coco_mini) -> np.ndarray:
    return next(iter(ec.real_images(coco_mini, 1).values()))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clip")
    return directory, ec.save_clip(directory)


def open_clip_tokens(visual, x: torch.Tensor) -> np.ndarray:
    """open_clip's own token output: ln_post over the sequence, class token dropped."""
    visual.output_tokens = True
    with torch.inference_mode():
        _, tokens = visual(x)
    visual.output_tokens = False
    return tokens[0].numpy()


def test_training_size_equals_open_clip(saved, image):
    directory, model = saved
    encoder = get_component("encoder", "clip", model=f"local-dir:{directory}", device="cpu")
    assert (encoder.patch_size, encoder.dim, encoder.native_grid) == (16, 32, (4, 4))
    crop = image[:64, :64]
    fm = encoder.encode(crop)
    assert fm.tokens.shape == (4, 4, 32)
    x = ec.pad_normalised(crop, 16, *MEAN_STD)
    ec.close(fm.tokens, open_clip_tokens(model.visual, x).reshape(4, 4, 32), rel=1e-5)
    # project=True: the same tokens in the joint image-text space
    projected = get_component("encoder", "clip", model=f"local-dir:{directory}", device="cpu", project=True)
    assert projected.dim == 24
    ec.close(projected.encode(crop).tokens, fm.tokens @ model.visual.proj.detach().numpy(), rel=1e-5)
    # an earlier block without ln_post = open_clip's forward_intermediates
    raw = get_component("encoder", "clip", model=f"local-dir:{directory}", device="cpu", layers=[2], norm=False)
    with torch.inference_mode():
        inter = model.visual.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)
    ec.close(raw.encode(crop).tokens, inter["image_intermediates"][0][0].reshape(4, 4, 32).numpy(), rel=1e-5)


@pytest.mark.parametrize("hw", [(150, 230), (426, 640), (100, 60)])
def test_other_sizes_equal_open_clip_with_its_resized_position_table(saved, image, hw):
    directory, _ = saved
    crop = image[: hw[0], : hw[1]]
    encoder = get_component("encoder", "clip", model=f"local-dir:{directory}", device="cpu")
    fm = encoder.encode(crop)
    ph, pw = fm.geometry.padded_hw
    resized = open_clip.create_model(f"local-dir:{directory}", force_image_size=(ph, pw)).eval()
    assert tuple(resized.visual.grid_size) == fm.geometry.grid_hw
    expected = open_clip_tokens(resized.visual, ec.pad_normalised(crop, 16, *MEAN_STD))
    ec.close(fm.tokens, expected.reshape(*fm.geometry.grid_hw, 32), rel=1e-4)


def test_architecture_name_with_a_checkpoint_file(saved, image, tmp_path):
    """`model` = an open_clip architecture name, `pretrained` = a checkpoint file (the offline route for tags)."""
    directory, _ = saved
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "moduseg-test-tiny-vit.json").write_text(json.dumps(ec.CLIP_CFG))
    open_clip.add_model_config(configs)
    by_name = get_component(
        "encoder", "clip", model="moduseg-test-tiny-vit", pretrained=str(directory / "open_clip_model.safetensors"),
        device="cpu",
    )
    by_dir = get_component("encoder", "clip", model=f"local-dir:{directory}", device="cpu")
    crop = image[:100, :140]
    # the architecture route uses the default (OpenAI) statistics: the same model sees other inputs
    assert by_name._mean is not None and not torch.allclose(by_name._mean, by_dir._mean)
    x = ec.pad_normalised(crop, 16, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    resized = open_clip.create_model(f"local-dir:{directory}", force_image_size=tuple(x.shape[-2:])).eval()
    ec.close(by_name.encode(crop).tokens, open_clip_tokens(resized.visual, x).reshape(7, 9, 32), rel=1e-4)


def test_errors_name_the_value_and_the_fix(saved, tmp_path):
    directory, _ = saved
    unknown = r"'ViT-B-61' is not an open_clip architecture; did you mean 'ViT-B-16'"
    with pytest.raises(ModusegError, match=unknown) as e:
        get_component("encoder", "clip", model="ViT-B-61")
    assert "\n" not in str(e.value)
    random_weights = r"pretrained=None would have random weights; set encoder.pretrained.*metaclip_fullcc"
    with pytest.raises(ModusegError, match=random_weights):
        get_component("encoder", "clip", model="ViT-B-16", pretrained=None)
    with pytest.raises(ModusegError, match=r"pretrained='nope' is neither a tag of ViT-B-16 \(tags: .*openai"):
        get_component("encoder", "clip", model="ViT-B-16", pretrained="nope")
    with pytest.raises(ModusegError, match="that folder does not exist"):
        get_component("encoder", "clip", model=f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "open_clip_config.json").write_text(json.dumps({"model_cfg": ec.CLIP_CFG}))
    with pytest.raises(ModusegError, match="holds no weights file"):
        get_component("encoder", "clip", model=f"local-dir:{tmp_path / 'noweights'}")
    with pytest.raises(ModusegError, match=r"pretrained='' is invalid"):
        get_component("encoder", "clip", pretrained="")


def test_timm_vision_towers_are_refused(tmp_path):
    """open_clip models whose vision tower is a timm model (SigLIP, ConvNeXt...) have no tokens to read here."""
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 24,
        "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 64},
        "text_cfg": ec.CLIP_CFG["text_cfg"],
    }
    model = open_clip.CLIP(**cfg)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(ModusegError, match=r"has a TimmModel vision tower.*for SigLIP use the siglip encoder"):
        get_component("encoder", "clip", model=f"local-dir:{tmp_path}")

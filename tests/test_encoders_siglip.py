"""The ``siglip`` encoder against an independent reference: the vision tower of a full
transformers ``SiglipModel`` (random weights, tiny config, saved like google/siglip-* repos) run
by hand on real photos with SigLIP's normalisation, zero padding and interpolated positions."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import encoder_checkpoints as ec
import torch

from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def image(coco_mini) -> np.ndarray:
    return next(iter(ec.real_images(coco_mini, 1).values()))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    directory = tmp_path_factory.mktemp("siglip")
    return directory, ec.save_siglip(directory)


def reference(model, image, patch=16, interpolate=True):
    x = ec.pad_normalised(image, patch, *HALF)
    with torch.inference_mode():
        out = model.vision_model(pixel_values=x, interpolate_pos_encoding=interpolate)
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    return out.last_hidden_state[0].reshape(h, w, -1).numpy()


def test_tokens_equal_the_vision_tower_run_by_hand(full, image):
    directory, model = full
    encoder = get_component("encoder", "siglip", model=str(directory), device="cpu")
    assert (encoder.patch_size, encoder.dim, encoder.prefix_tokens) == (16, 32, 0)
    crop = image[:150, :230]  # a 10×15 grid from a position table trained on 4×4
    ec.close(encoder.encode(crop).tokens, reference(model, crop))
    ec.close(encoder.encode(image).tokens, reference(model, image))
    # at the training size the interpolation is the identity
    native = image[:64, :64]
    ec.close(encoder.encode(native).tokens, reference(model, native, interpolate=False), rel=1e-5)


def test_vision_only_checkpoint_and_patch_14(tmp_path, image):
    """A vision-only save (siglip_vision_model) loads too; so400m-style 14-px patches."""
    from transformers import SiglipVisionModel

    full = ec.save_siglip(tmp_path / "full", patch=14, image_size=56, seed=3)
    vision = SiglipVisionModel.from_pretrained(tmp_path / "full")
    vision.save_pretrained(tmp_path / "vision")
    encoder = get_component("encoder", "siglip", model=str(tmp_path / "vision"), device="cpu")
    crop = image[:100, :150]
    fm = encoder.encode(crop)
    assert encoder.patch_size == 14 and fm.tokens.shape == (8, 11, 32)
    ec.close(fm.tokens, reference(full, crop, patch=14))


def test_wrong_checkpoint_type_is_refused(tmp_path):
    ec.save_dinov2(tmp_path / "v2")
    with pytest.raises(ModusegError, match=r"is a 'dinov2' checkpoint; the siglip encoder needs a SigLIP") as e:
        get_component("encoder", "siglip", model=str(tmp_path / "v2"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModusegError, match="no config.json"):
        get_component("encoder", "siglip", model=str(tmp_path / "empty"))

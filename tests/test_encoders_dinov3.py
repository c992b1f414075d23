"""The ``dinov3`` encoder against an independent reference: transformers' ``DINOv3ViTModel``
(random weights, tiny configs saved with save_pretrained) run on real photos normalised and
zero-padded by hand. Hub ids are covered by tests/test_encoders_hub.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DINOv3ViTModel"):
    pytest.skip("transformers without DINOv3 (needs >= 4.56)", allow_module_level=True)

import encoder_checkpoints as ec
import torch

from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def image(coco_mini) -> np.ndarray:
    return next(iter(ec.real_images(coco_mini, 1).values()))[:150, :230]  # pads to 160×240


@pytest.mark.parametrize("registers, gated", [(4, False), (0, False), (4, True)])
def test_tokens_equal_the_model_run_by_hand(tmp_path, image, registers, gated):
    """Registers (CLS + 4 in front of the patches), none, and the gated MLP of the '+' sizes."""
    model = ec.save_dinov3(tmp_path, registers=registers, gated=gated, seed=registers + gated)
    encoder = get_component("encoder", "dinov3", model=str(tmp_path), device="cpu")
    assert (encoder.patch_size, encoder.dim, encoder.prefix_tokens) == (16, 32, 1 + registers)
    fm = encoder.encode(image)
    assert fm.geometry.padded_hw == (160, 240) and fm.tokens.shape == (10, 15, 32)
    x = ec.pad_normalised(image, 16, *IMAGENET)
    with torch.inference_mode():
        out = model(pixel_values=x, output_hidden_states=True)
    ec.close(fm.tokens, out.last_hidden_state[0, 1 + registers :].reshape(10, 15, 32).numpy())
    # an earlier block without the final norm
    raw = get_component("encoder", "dinov3", model=str(tmp_path), device="cpu", layers=[2], norm=False).encode(image)
    ec.close(raw.tokens, out.hidden_states[2][0, 1 + registers :].reshape(10, 15, 32).numpy())


def test_rope_handles_any_grid(tmp_path, image):
    """No position table to interpolate: a grid far from the config's image_size runs as is."""
    ec.save_dinov3(tmp_path)
    encoder = get_component("encoder", "dinov3", model=str(tmp_path), device="cpu")
    for crop in (image[:16, :16], image[:40, :230], image):
        fm = encoder.encode(crop)
        assert fm.tokens.shape[:2] == fm.geometry.grid_hw and np.isfinite(fm.tokens).all()


def test_wrong_checkpoint_type_is_refused(tmp_path):
    ec.save_dinov2(tmp_path / "v2")
    with pytest.raises(ModusegError, match=r"is a 'dinov2' checkpoint; the dinov3 encoder needs 'dinov3_vit'") as e:
        get_component("encoder", "dinov3", model=str(tmp_path / "v2"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModusegError, match="does not exist"):
        get_component("encoder", "dinov3", model=str(tmp_path / "missing"))

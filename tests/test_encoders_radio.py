"""The ``radio`` adapter, tested against a STAND-IN for RADIO's model code.

RADIO (NVlabs/RADIO, nvidia/C-RADIOv4-*) is not pip-installable and its weights cannot be
downloaded here, so tests/radio_standin/ holds a tiny random-weight ViT that follows RADIO's
documented call interface ([0, 1] input normalised inside, ``(summary, spatial_features)``
output, ``min_resolution_step``, ``forward_intermediates``...). It is loaded through the real
published loaders: ``torch.hub.load(<local repo>, 'radio_model', version=...)`` here, and
``AutoModel.from_pretrained(..., trust_remote_code=True)`` for a hub id and a local copy in
tests/test_encoders_hub.py. What this proves is the adapter (padding, scaling, layout, layers,
dtype, errors) — not RADIO's numbers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import encoder_checkpoints as ec
import torch

from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

VERSION = "c-radio_v4-so400m"


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def images(coco_mini) -> list[np.ndarray]:
    return list(ec.real_images(coco_mini, 3).values())


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    directory = tmp_path_factory.mktemp("radio-hub")
    return directory, ec.save_radio_hub(directory, version=VERSION)


def radio(hub, **options):
    return get_component("encoder", "radio", model=VERSION, hub_repo=str(hub[0]), device="cpu", **options)


def test_spatial_features_of_the_black_padded_image(hub, images):
    """The paper's input: native size, black padding to 16, [0, 1] pixels; the model normalises."""
    encoder = radio(hub)
    model = hub[1]
    assert (encoder.patch_size, encoder.pad_multiple, encoder.dim) == (16, 16, 32)
    for image in images:
        fm = encoder.encode(image)
        h, w = image.shape[:2]
        assert fm.geometry.image_hw == fm.geometry.resized_hw == (h, w)
        x = ec.pad_black(image, 16)
        assert fm.geometry.padded_hw == tuple(x.shape[-2:])
        with torch.inference_mode():
            summary, spatial = model(x)
        assert spatial.shape[1] == fm.tokens.shape[0] * fm.tokens.shape[1]
        ec.close(fm.tokens, spatial[0].reshape(*fm.geometry.grid_hw, -1).numpy())


def test_intermediate_blocks_use_forward_intermediates(hub, images):
    model = hub[1]
    image = images[0][:200, :300]
    x = ec.pad_black(image, 16)
    for norm in (True, False):
        fm = radio(hub, layers=[2], norm=norm).encode(image)
        with torch.inference_mode():
            (inter,) = model.forward_intermediates(x, indices=[1], norm=norm, output_fmt="NLC", intermediates_only=True)
        ec.close(fm.tokens, inter[0].reshape(*fm.geometry.grid_hw, -1).numpy())


def test_bfloat16_runs_under_autocast_with_float32_weights(hub, images):
    encoder = radio(hub, dtype="bfloat16", resize=160)
    assert next(encoder.model.parameters()).dtype == torch.float32  # weights stay as loaded
    low = encoder.encode(images[0]).tokens
    ref = radio(hub, resize=160).encode(images[0]).tokens
    assert low.dtype == np.float32 and not np.array_equal(low, ref)
    assert np.abs(low - ref).max() / np.abs(ref).max() < 0.05


def test_resolution_step_and_max_resolution(hub, images):
    encoder = radio(hub)
    encoder.pad_multiple = 32  # as with a ViTDet window of 2: sizes must be multiples of 32
    fm = encoder.encode(images[0][:100, :150])
    assert fm.geometry.padded_hw == (128, 160) and fm.geometry.grid_hw == (8, 10) == fm.tokens.shape[:2]
    encoder.pad_multiple = 16
    encoder.max_resolution = 256
    image = images[0][:300, :200]
    too_large = r"pads to 304×208, larger than the model's max_resolution 256; set encoder.resize=256"
    with pytest.raises(ModusegError, match=too_large):
        encoder.encode(image)
    assert encoder.encode(image[:256, :200]).tokens.shape[:2] == (16, 13)


def test_loader_errors_are_one_line(hub, tmp_path):
    with pytest.raises(ModusegError, match=r"could not load RADIO version 'radio_v9' through torch.hub") as e:
        get_component("encoder", "radio", model="radio_v9", hub_repo=str(hub[0]))
    assert "\n" not in str(e.value)
    (tmp_path / "clone").mkdir()
    with pytest.raises(ModusegError, match=r"is a directory without hubconf.py"):
        get_component("encoder", "radio", model=VERSION, hub_repo=str(tmp_path / "clone"))
    with pytest.raises(ModusegError, match=r"neither a local clone .* nor a GitHub owner/repo"):
        get_component("encoder", "radio", model=VERSION, hub_repo="NVlabs/RADIO/extra")
    (tmp_path / "hfcopy").mkdir()
    with pytest.raises(ModusegError, match="no config.json"):
        get_component("encoder", "radio", model=str(tmp_path / "hfcopy"))
    # a checkpoint that does not follow RADIO's interface is named, not half-used
    ec.save_dinov2(tmp_path / "dinov2")
    with pytest.raises(ModusegError, match=r"lacks RADIO's interface"):
        get_component("encoder", "radio", model=str(tmp_path / "dinov2"))


def test_half_precision_checkpoints_run_in_float32(tmp_path, images):
    """RADIO checkpoints ship in half precision and set their conditioner to cast to it; float32 means float32."""
    model = ec.save_radio_hub(tmp_path, version="c-radio_v4-h", dtype=torch.bfloat16)
    encoder = get_component("encoder", "radio", model="c-radio_v4-h", hub_repo=str(tmp_path), device="cpu")
    assert next(encoder.model.parameters()).dtype == torch.float32
    image = images[1][:120, :200]
    # the reference: the same bfloat16-rounded weights, run in float32
    model.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    with torch.inference_mode():
        _, spatial = model(ec.pad_black(image, 16))
    fm = encoder.encode(image)
    ec.close(fm.tokens, spatial[0].reshape(*fm.geometry.grid_hw, -1).numpy())

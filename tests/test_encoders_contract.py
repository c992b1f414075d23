"""What every ViT encoder promises, checked on each with its REAL model class (random weights,
tiny configs, loaded from local checkpoints laid out as their hubs would) on real coco-mini photos:
the token grid of the native/resized policy, float32 finite tokens, encode_batch == encode,
bfloat16/float16 close to float32, layer averaging, and one-line errors.

The radio encoder runs a stand-in for RADIO's model code (tests/radio_standin; RADIO itself
cannot be installed here) through its real torch.hub loader."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

import encoder_checkpoints as ec

import moduseg_core.contract.plugins as plugins
from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

ENCODERS = ["dinov2", "dinov3", "siglip", "clip", "radio"]
PATCH = {"dinov2": 14, "dinov3": 16, "siglip": 16, "clip": 16, "radio": 16}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    yield from ec.isolated_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, dict]:
    """encoder name → the options that load its tiny checkpoint."""
    root = tmp_path_factory.mktemp("checkpoints")
    ec.save_dinov2(root / "dinov2", registers=4)
    ec.save_dinov3(root / "dinov3")
    ec.save_siglip(root / "siglip")
    ec.save_clip(root / "clip")
    ec.save_radio_hub(root / "radio-hub", version="c-radio_v4-so400m")
    return {
        "dinov2": {"model": str(root / "dinov2")},
        "dinov3": {"model": str(root / "dinov3")},
        "siglip": {"model": str(root / "siglip")},
        "clip": {"model": f"local-dir:{root / 'clip'}"},
        "radio": {"model": "c-radio_v4-so400m", "hub_repo": str(root / "radio-hub")},
    }


@pytest.fixture(scope="module")
def images(coco_mini) -> dict[str, np.ndarray]:
    return ec.real_images(coco_mini, 5)


def build(sources, name, **options):
    return get_component("encoder", name, **{"device": "cpu", **sources[name], **options})


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", ENCODERS)
def test_native_size_grid(sources, images, name):
    encoder = build(sources, name)
    patch = PATCH[name]
    assert encoder.patch_size == patch and encoder.dim == 32
    previous = None
    for image in list(images.values())[:3]:  # full-size photos, landscape and portrait
        fm = encoder.encode(image)
        h, w = image.shape[:2]
        assert fm.geometry.image_hw == fm.geometry.resized_hw == (h, w)
        assert fm.geometry.padded_hw == (math.ceil(h / patch) * patch, math.ceil(w / patch) * patch)
        assert fm.tokens.shape == (math.ceil(h / patch), math.ceil(w / patch), 32)
        assert fm.tokens.dtype == np.float32 and np.isfinite(fm.tokens).all()
        assert fm.tokens.std() > 0.05
        if previous is not None and previous.shape == fm.tokens.shape:
            assert not np.allclose(previous, fm.tokens)  # the tokens depend on the image
        previous = fm.tokens


@pytest.mark.parametrize("name", ENCODERS)
def test_resize_longer_side(sources, images, name):
    encoder = build(sources, name, resize=100)
    patch = PATCH[name]
    for image in list(images.values())[:3]:
        h, w = image.shape[:2]
        fm = encoder.encode(image)
        rh, rw = fm.geometry.resized_hw
        assert max(rh, rw) == 100 and abs(rh / rw - h / w) < 0.02
        assert fm.geometry.image_hw == (h, w)
        assert fm.tokens.shape[:2] == fm.geometry.grid_hw == (math.ceil(rh / patch), math.ceil(rw / patch))
        assert np.isfinite(fm.tokens).all()


@pytest.mark.parametrize("name", ENCODERS)
def test_encode_batch_equals_encode(sources, images, name):
    single = build(sources, name)
    batched = build(sources, name, batch_size=2)
    # crops of the real photos in two sizes: one size group spans two chunks of 2, one is alone
    crops = [image[:150, :200] if i % 2 == 0 else image[:170, :130] for i, image in enumerate(images.values())]
    expected = [single.encode(crop) for crop in crops]
    padded = [fm.geometry.padded_hw for fm in expected]
    assert sorted(padded.count(p) for p in set(padded)) == [2, 3]
    got = batched.encode_batch(crops)
    assert len(got) == len(crops)
    for fm, want in zip(got, expected, strict=True):
        assert fm.geometry == want.geometry
        ec.close(fm.tokens, want.tokens, rel=1e-4)
    assert batched.encode_batch([]) == []


@pytest.mark.parametrize("dtype, min_cos, max_rel", [("bfloat16", 0.995, 0.05), ("float16", 0.9995, 0.01)])
@pytest.mark.parametrize("name", ENCODERS)
def test_low_precision_matches_float32(sources, images, name, dtype, min_cos, max_rel):
    image = next(iter(images.values()))
    reference = build(sources, name, resize=160).encode(image).tokens
    low = build(sources, name, resize=160, dtype=dtype).encode(image).tokens
    assert low.dtype == np.float32 and np.isfinite(low).all()
    assert cosine_rows(low, reference).min() >= min_cos
    assert np.abs(low - reference).max() / np.abs(reference).max() <= max_rel
    assert not np.array_equal(low, reference)  # the low precision really ran


@pytest.mark.parametrize("name", ENCODERS)
def test_several_layers_are_averaged(sources, images, name):
    image = next(iter(images.values()))

    def encode(layers):
        return build(sources, name, layers=layers, resize=128).encode(image).tokens

    mean = encode([1, 2, 3])
    singles = [encode([i]) for i in (1, 2, 3)]
    ec.close(mean, np.mean(singles, axis=0), rel=1e-5)
    assert not np.allclose(singles[0], singles[2])
    if name != "radio":  # radio's -1 alone is the model's own spatial output, not a block index
        ec.close(encode([-1]), encode([3]), rel=1e-6)
        ec.close(encode([-3, -1]), encode([1, 3]), rel=1e-6)


@pytest.mark.parametrize("name", ENCODERS)
def test_errors_are_one_line(sources, images, name):
    for bad in (4, -4):
        with pytest.raises(ModusegError, match=rf"layers has {bad}.*allowed 1\.\.3 or -3\.\.-1") as e:
            build(sources, name, layers=[1, bad])
        assert "\n" not in str(e.value)
    with pytest.raises(ModusegError, match="1-based"):
        build(sources, name, layers=[0])
    with pytest.raises(
        ModusegError,
        match=rf"encoder '{name}' option device='tpu' is invalid.*device must be auto, cpu, mps, cuda or cuda:N",
    ):
        build(sources, name, device="tpu")
    with pytest.raises(ModusegError, match=r"dtype='float64' is invalid"):
        build(sources, name, dtype="float64")
    encoder = build(sources, name)
    with pytest.raises(
        ModusegError, match=rf"encoder '{name}' got an image of shape \(20, 20\); expected uint8 H×W×3 RGB"
    ):
        encoder.encode(np.zeros((20, 20), np.uint8))
    with pytest.raises(ModusegError, match="uint8"):
        encoder.encode(next(iter(images.values())).astype(np.float32))


@pytest.mark.parametrize("name", ENCODERS)
def test_runtime_fields_stay_out_of_the_identity(sources, name):
    values = {**sources[name], "device": "cpu", "dtype": "bfloat16", "batch_size": 3}
    options = plugins.build_options("encoder", name, values)
    identity = options.identity()
    assert not {"device", "dtype", "batch_size"} & set(identity)
    assert identity["model"] == sources[name]["model"] and identity["layers"] == [-1]


def test_entry_point_modules_are_light():
    modules = ", ".join(f"moduseg_builtins.encoders.{n}" for n in ENCODERS)
    code = (
        f"import sys, {modules}; "
        "print(sorted(x for x in ('torch', 'transformers', 'open_clip', 'timm', 'einops') if x in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_declared_requirements():
    import moduseg_core as ms

    specs = {s.name: s for s in ms.list_components("encoder")}
    assert (specs["dinov3"].extra, specs["dinov3"].requires) == ("transformers", ("torch", "transformers"))
    assert (specs["siglip"].extra, specs["siglip"].requires) == ("transformers", ("torch", "transformers"))
    assert (specs["clip"].extra, specs["clip"].requires) == ("clip", ("torch", "open_clip"))
    assert (specs["radio"].extra, specs["radio"].requires) == ("radio", ("torch", "timm", "einops"))
    assert all(specs[n].weights for n in ENCODERS)

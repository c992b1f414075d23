"""Tiny random-weight checkpoints of the encoders' REAL model classes, laid out as their hubs would.

Helpers for tests/test_encoders_*.py (not a test module). Every builder saves with the
library's own writer (``save_pretrained``, open_clip's ``open_clip_config.json`` + safetensors,
a ``torch.hub`` repo with ``hubconf.py``) and returns the in-memory model for references.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import torch

STANDIN_DIR = Path(__file__).resolve().parent / "radio_standin"


# -- transformers ViTs -------------------------------------------------------------------------------------


def save_dinov2(directory: Path, registers: int = 0, seed: int = 0, swiglu: bool = False):
    from transformers import AutoModel, Dinov2Config, Dinov2WithRegistersConfig

    common = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, patch_size=14, image_size=56,
        use_swiglu_ffn=swiglu,
    )
    config = Dinov2WithRegistersConfig(num_register_tokens=registers, **common) if registers else Dinov2Config(**common)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(directory)
    return model


def save_dinov3(directory: Path, seed: int = 0, gated: bool = False, registers: int = 4):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=16,
        image_size=64, num_register_tokens=registers, use_gated_mlp=gated, layerscale_value=1.0,
    )
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config).eval()
    model.save_pretrained(directory)
    return model


def save_siglip(directory: Path, seed: int = 0, patch: int = 16, image_size: int = 64):
    """A full ``SiglipModel`` (text + vision), as google/siglip-* repos hold."""
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=patch,
            image_size=image_size,
        ),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    model.save_pretrained(directory)
    return model


# -- open_clip ---------------------------------------------------------------------------------------------

#: a tiny CLIP in open_clip's config format: ViT with 16-px patches on a 4×4 native grid
CLIP_CFG = {
    "embed_dim": 24,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
CLIP_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def save_clip(directory: Path, seed: int = 0):
    """``local-dir:`` / ``hf-hub:`` layout: open_clip_config.json + open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**CLIP_CFG).eval()
    with torch.no_grad():  # open_clip initialises the position table small; make it matter in tests
        model.visual.positional_embedding.normal_(0, 0.5)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": CLIP_CFG, "preprocess_cfg": CLIP_PREPROCESS}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return model


# -- the RADIO stand-in ------------------------------------------------------------------------------------


def standin_module():
    """tests/radio_standin/hf_model.py, imported under a private name."""
    name = "moduseg_test_radio_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STANDIN_DIR / "hf_model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def save_radio_hf(directory: Path, seed: int = 0):
    """A copy of an nvidia/C-RADIO* hub repo: config.json with auto_map, hf_model.py, model.safetensors."""
    module = standin_module()
    torch.manual_seed(seed)
    model = module.RADIOModel(module.RADIOConfig()).eval()
    model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "hf_model.RADIOConfig", "AutoModel": "hf_model.RADIOModel"}
    config["architectures"] = ["RADIOModel"]
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(STANDIN_DIR / "hf_model.py", directory / "hf_model.py")
    return model


def save_radio_hub(directory: Path, version: str = "c-radio_v4-so400m", seed: int = 0, dtype=torch.float32):
    """A local torch.hub repo (hubconf.py + model code) with the weights of ``version`` (stored in ``dtype``)."""
    module = standin_module()
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDIN_DIR / "hf_model.py", directory / "hf_model.py")
    shutil.copy(STANDIN_DIR / "hubconf.py", directory / "hubconf.py")
    torch.manual_seed(seed)
    model = module.RADIOBase().eval()
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()},
               directory / f"{version}.pth")
    return model


# -- an offline Hugging Face cache ---------------------------------------------------------------------------


def write_hub_cache(hub: Path, repo_id: str, source: Path) -> None:
    """Lay ``source``'s files out as huggingface_hub does: blobs, a snapshot of symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(p for p in source.iterdir() if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        try:
            (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
        except OSError:  # no symlinks on this filesystem: the hub client copies then
            (snapshot / file.name).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


# -- test environment ----------------------------------------------------------------------------------------

ENCODER_PLUGINS = "encoders"


def isolated_registry(tmp_path_factory, plugins: str = ENCODER_PLUGINS):
    """Generator for a module-scoped autouse fixture: only the named entry points, a private
    conversion cache, the hub offline; the registry is rebuilt before and after."""
    from conftest import plugins_only

    with plugins_only(
        plugins,
        MODUSEG_CACHE=str(tmp_path_factory.mktemp("moduseg-cache")),
        HF_HUB_OFFLINE="1",
    ):
        yield


def real_images(coco_mini: Path, count: int = 5):
    """``count`` real coco-mini photos (sorted by name) as uint8 H×W×3 arrays."""
    import numpy as np
    from PIL import Image

    paths = sorted((coco_mini / "JPEGImages").glob("*.jpg"))[:count]
    assert len(paths) == count, f"coco-mini has fewer than {count} images in {coco_mini / 'JPEGImages'}"
    return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in paths}


def pad_normalised(image, patch: int, mean, std):
    """Written independently of the encoders: scale to [0, 1], normalise, zero-pad bottom/right → 1×3×ph×pw."""
    import numpy as np

    h, w = image.shape[:2]
    ph, pw = -(-h // patch) * patch, -(-w // patch) * patch
    x = np.zeros((ph, pw, 3), np.float32)
    x[:h, :w] = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def pad_black(image, multiple: int):
    """[0, 1] pixels padded with black (0) at the bottom/right to ``multiple`` → 1×3×ph×pw (RADIO's input)."""
    import numpy as np

    h, w = image.shape[:2]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = np.zeros((ph, pw, 3), np.float32)
    x[:h, :w] = image.astype(np.float32) / 255.0
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def close(a, b, rel: float = 1e-4) -> float:
    """Max abs difference relative to the reference's scale; asserts it is below ``rel``."""
    import numpy as np

    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = float(np.abs(b).max()) or 1.0
    err = float(np.abs(a - b).max()) / scale
    assert err < rel, f"max abs diff {err * scale:.3g} (relative {err:.3g}) exceeds {rel}"
    return err

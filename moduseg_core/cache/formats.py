"""How each stage's entry is written and read.

========== ============================================================================
stage      entry
========== ============================================================================
proposals  ``.npz`` in the documented ``precomputed`` proposal format (docs/formats.md):
           ``packed`` (``np.packbits`` of the flattened bool masks), ``shape`` (N, H, W),
           ``scores``; entries written before this format (``packed`` one row per mask)
           still load
features   ``.npz``: ``tokens`` float32 and ``geometry`` (image, resized, padded, patch)
pooled     ``.npz``: ``ok`` (which masks could be pooled) and their ``vectors``
banks      a bank directory (``moduseg_core.pipeline.bank``)
predictions a palette ``.png`` class map; kept labels, scores and the masks seen in its
           ``moduseg`` text chunk
scores     ``.json``
========== ============================================================================

Every reader refuses an entry it cannot read with a ``ModusegError`` naming the file and the
fix (``moduseg cache prune --all``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import FeatureMap, Geometry, Prediction, Proposals
from moduseg_core.files.proposal_files import packed_size, unpack_all, write_packed


def _unreadable(path: Path, what: str, exc: BaseException | None = None) -> ModusegError:
    reason = f": {exc}" if exc is not None else ""
    return ModusegError(
        f"cache entry {path} is not a {what} this moduseg can read{reason}; "
        "clear the cache with `moduseg cache prune --all` (or --stage) and run again"
    )


def save_proposals(path: Path, proposals: Proposals) -> None:
    """The ``precomputed`` proposer's format (``moduseg_core.files.proposal_files``)."""
    with open(path, "wb") as f:
        write_packed(f, proposals)


def load_proposals(path: Path) -> Proposals:
    """Reads the ``precomputed`` packed format, and the first cache format (one packed row per mask)."""
    try:
        with np.load(path) as data:
            n, height, width = (int(v) for v in data["shape"])
            packed = data["packed"]
            scores = data["scores"].astype(np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, "proposals entry", exc) from exc
    if packed.ndim == 2:  # cache format 1: np.packbits(masks.reshape(n, -1), axis=1)
        if packed.shape[0] != n:
            raise _unreadable(path, "proposals entry")
        masks = np.unpackbits(packed, axis=1, count=height * width).reshape(n, height, width).view(bool)
    elif packed.ndim == 1 and packed.dtype == np.uint8 and packed.size == packed_size((n, height, width)):
        masks = unpack_all(packed, (n, height, width))
    else:
        raise _unreadable(path, "proposals entry")
    if len(scores) != n:
        raise _unreadable(path, "proposals entry")
    return Proposals(masks, scores)


def save_features(path: Path, features: FeatureMap) -> None:
    g = features.geometry
    geometry = np.array([*g.image_hw, *g.resized_hw, *g.padded_hw, g.patch_size], np.int64)
    with open(path, "wb") as f:
        np.savez(f, tokens=features.tokens, geometry=geometry)


def load_features(path: Path) -> FeatureMap:
    try:
        with np.load(path) as data:
            v = [int(x) for x in data["geometry"]]
            geometry = Geometry((v[0], v[1]), (v[2], v[3]), (v[4], v[5]), v[6])
            return FeatureMap(np.ascontiguousarray(data["tokens"], dtype=np.float32), geometry)
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, "features entry", exc) from exc


def save_pooled(path: Path, ok: np.ndarray, vectors: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, ok=ok, vectors=vectors)


def load_pooled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(ok, vectors)``: which masks could be pooled (bool N) and their vectors."""
    try:
        with np.load(path) as data:
            return data["ok"], data["vectors"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, "pooled entry", exc) from exc


def save_prediction(path: Path, prediction: Prediction, seen: int) -> None:
    from PIL import Image, PngImagePlugin

    from moduseg_core.files.io import voc_palette

    info = PngImagePlugin.PngInfo()
    meta = {"seen": int(seen), "labels": prediction.labels.tolist(), "scores": [float(s) for s in prediction.scores]}
    info.add_text("moduseg", json.dumps(meta))
    img = Image.fromarray(prediction.semantic.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    img.save(path, format="PNG", pnginfo=info)


def load_prediction(path: Path) -> tuple[Prediction, int]:
    """A cached class map with its kept labels and scores (the kept masks are not stored), and
    the number of proposals the prediction saw."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        semantic = np.asarray(img, dtype=np.int32)
        meta = json.loads(img.text.get("moduseg", "{}"))
    height, width = semantic.shape
    labels = np.asarray(meta.get("labels", []), np.int32)
    scores = np.asarray(meta.get("scores", []), np.float32)
    return Prediction(semantic, np.zeros((0, height, width), bool), labels, scores), int(meta.get("seen", 0))

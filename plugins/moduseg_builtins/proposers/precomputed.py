"""The ``precomputed`` proposer: class-agnostic masks read from disk, one file per image id.

Formats (docs/formats.md), looked up in this order:

- ``{id}.npz`` with ``masks`` (bool N×H×W) or ``packed`` (``np.packbits`` of the flattened
  bool masks) + ``shape`` (N, H, W); optional ``scores`` (float32 N, default 1.0).
  :func:`save_proposals` writes this (packed) format.
- ``{id}.png``: an instance map; 0 = no mask, every other value is one mask (score 1.0).

numpy and pillow only.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field

from moduseg_core import ModusegError, Options
from moduseg_core.contract.types import Proposals
from moduseg_core.files.io import atomic_path, exif_oriented
from moduseg_core.files.proposal_files import packed_size, unpack_all, unpack_one, write_packed
from moduseg_core.method.scale import resize_nearest

from .._shared import short_reason


def save_proposals(path: Path | str, proposals: Proposals) -> None:
    """Write ``proposals`` to ``path`` (must end in ``.npz``) as ``packed`` + ``shape`` + ``scores``, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ModusegError(f"proposal file {path} must end in .npz (the precomputed proposer reads {{id}}.npz)")
    masks = np.asarray(proposals.masks, dtype=bool)
    scores = np.asarray(proposals.scores, dtype=np.float32)
    if not np.isfinite(scores).all():
        raise ModusegError(
            f"proposal file {path}: refusing to write NaN or infinite scores; give every mask a finite score"
        )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write_packed(handle, Proposals(masks, scores))


def load_proposals(path: Path | str, expected_hw: tuple[int, int] | None = None) -> Proposals:
    """Read an ``.npz`` proposal file or a ``.png`` instance map (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        masks, scores = _read_png(path, expected_hw)
    else:
        masks, scores = _read_npz(path, expected_hw)
    if expected_hw is not None and masks.shape[1:] != tuple(expected_hw):
        raise ModusegError(
            f"proposal file {path} has masks of {masks.shape[1]}×{masks.shape[2]} but the image is "
            f"{expected_hw[0]}×{expected_hw[1]}; proposals must be at the image's full size"
        )
    return Proposals(masks, scores)


def _working_size(stored_hw: tuple[int, ...], expected_hw: tuple[int, int] | None) -> tuple[int, int] | None:
    """``expected_hw`` when the image handed over is the working-size copy of a photo of
    ``stored_hw`` (``method.work_pixels``: both sides scaled by one factor, then floored), else None."""
    if expected_hw is None or tuple(stored_hw) == tuple(expected_hw):
        return None
    (big_h, big_w), (h, w) = stored_hw, expected_hw
    if not (0 < h <= big_h and 0 < w <= big_w):
        return None
    # some s with floor(big_h·s) = h and floor(big_w·s) = w: [h/H, (h+1)/H) and [w/W, (w+1)/W) overlap
    return (h, w) if h * big_w < (w + 1) * big_h and w * big_h < (h + 1) * big_w else None


def _read_npz(path: Path, expected_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise ModusegError(f"proposal file {path} does not exist") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModusegError(
            f"proposal file {path} is unreadable or corrupt ({short_reason(exc, 160)}); regenerate it"
        ) from exc
    if "masks" in arrays:
        masks = arrays["masks"]
        if masks.ndim != 3:
            raise ModusegError(f"proposal file {path}: 'masks' has shape {masks.shape}; expected bool N×H×W")
        if masks.dtype != np.bool_:
            if not np.issubdtype(masks.dtype, np.integer) or masks.size and masks.max() > 1 or masks.min(initial=0) < 0:
                raise ModusegError(
                    f"proposal file {path}: 'masks' is {masks.dtype} with values other than 0/1; expected bool N×H×W"
                )
            masks = masks.astype(bool)
        work = _working_size(masks.shape[1:], expected_hw)
        if work is not None:
            masks = np.stack([resize_nearest(m, work) for m in masks]) if len(masks) else np.zeros((0, *work), bool)
    elif "packed" in arrays and "shape" in arrays:
        shape = tuple(int(v) for v in np.asarray(arrays["shape"]).ravel())
        packed = np.asarray(arrays["packed"])
        if len(shape) != 3 or min(shape) < 0:
            raise ModusegError(f"proposal file {path}: 'shape' is {shape}; expected (N, H, W)")
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != packed_size(shape):
            raise ModusegError(
                f"proposal file {path}: 'packed' is {packed.dtype} of {packed.size} bytes; expected uint8 of "
                f"{packed_size(shape)} bytes for shape {shape} (np.packbits of the flattened bool masks)"
            )
        work = _working_size(shape[1:], expected_hw)
        if work is None:
            masks = unpack_all(packed, shape)
        else:  # one full-size mask at a time: a huge photo's proposals never exist at full size together
            masks = np.zeros((shape[0], *work), bool)
            for i in range(shape[0]):
                masks[i] = resize_nearest(unpack_one(packed, shape, i), work)
    else:
        raise ModusegError(
            f"proposal file {path} holds {sorted(arrays)}; expected 'masks' (bool N×H×W) or 'packed' + 'shape', "
            "and optionally 'scores' (write it with moduseg_builtins.proposers.precomputed.save_proposals)"
        )
    n = masks.shape[0]
    if "scores" in arrays:
        scores = np.asarray(arrays["scores"])
        if scores.ndim != 1 or scores.shape[0] != n:
            raise ModusegError(
                f"proposal file {path} has {scores.size} scores for {n} masks; 'scores' must be float32 of length N"
            )
        if scores.dtype.kind not in "fiu":
            raise ModusegError(f"proposal file {path}: 'scores' is {scores.dtype}; expected float32 of length N")
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            raise ModusegError(
                f"proposal file {path}: score {scores[bad[0]]} of mask {int(bad[0])} is not a finite number "
                f"({len(bad)} of {n} scores are NaN or infinite); regenerate the file"
            )
        scores = scores.astype(np.float32)
    else:
        scores = np.ones(n, dtype=np.float32)
    return masks, scores


def _read_png(path: Path, expected_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ModusegError(
                    f"instance map {path} has mode {img.mode}; it must be a palette or grayscale PNG of instance ids "
                    "(0 = no mask)"
                )
            instances = np.asarray(exif_oriented(img), dtype=np.int32)  # as displayed, like images and masks
    except FileNotFoundError as exc:
        raise ModusegError(f"instance map {path} does not exist") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ModusegError(
            f"instance map {path} is unreadable or corrupt ({short_reason(exc, 160)}); regenerate it"
        ) from exc
    work = _working_size(instances.shape, expected_hw)
    if work is not None:
        instances = resize_nearest(instances, work)
    values, inverse = np.unique(instances, return_inverse=True)
    inverse = inverse.reshape(-1)
    h, w = instances.shape
    masks = np.zeros((len(values), h * w), dtype=bool)
    masks[inverse, np.arange(h * w)] = True
    keep = values != 0
    masks = masks[keep].reshape(int(keep.sum()), h, w)
    return masks, np.ones(masks.shape[0], dtype=np.float32)


class PrecomputedProposerOptions(Options):
    root: Path = Field(..., description="folder of {id}.npz proposal files or {id}.png instance maps (docs/formats.md)")
    score_threshold: float = Field(
        0.0,
        description="keep masks with score >= this (the paper keeps EntitySeg masks with score >= 0.6)",
    )


class PrecomputedProposer:
    """Masks produced by another tool (e.g. EntitySeg), read per image id."""

    def __init__(self, options: PrecomputedProposerOptions):
        self.root = Path(options.root).expanduser()
        self.score_threshold = float(options.score_threshold)
        if not self.root.is_dir():
            raise ModusegError(
                f"proposer 'precomputed' root {self.root} does not exist or is not a folder; "
                "set --set proposer.root=<folder of {id}.npz or {id}.png files>"
            )

    def path_for(self, image_id: str) -> Path:
        npz = self.root / f"{image_id}.npz"
        if npz.is_file():
            return npz
        png = self.root / f"{image_id}.png"
        if png.is_file():
            return png
        raise ModusegError(
            f"proposal file {npz} (or {png.name}) does not exist; proposer 'precomputed' needs one file per image "
            "under its root (check proposer.root and the image ids)"
        )

    def propose(self, image: np.ndarray, *, image_id: str | None = None) -> Proposals:
        if image_id is None:
            raise ModusegError(
                "proposer 'precomputed' needs the image id to find its file, but none was given; call "
                "propose(image, image_id=...) or use a proposer that computes masks (e.g. slic)"
            )
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise ModusegError(
                f"proposer 'precomputed' got an image of shape {getattr(image, 'shape', None)}; expected uint8 H×W×3"
            )
        proposals = load_proposals(self.path_for(image_id), expected_hw=image.shape[:2])
        return proposals.select(proposals.scores >= self.score_threshold)

"""Reading images and masks with one-line errors; writing files atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ModusegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: Path | str) -> np.ndarray:
    """→ ``uint8 H×W×3`` RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ModusegError(f"image {path} does not exist; check the dataset root and split list") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ModusegError(f"image {path} is unreadable or corrupt ({exc}); replace or remove it") from None


def read_mask(path: Path | str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A class-index PNG (palette or grayscale) → ``int32 H×W``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ModusegError(
                    f"mask {path} has mode {img.mode}; masks must be palette or grayscale PNGs of class ids"
                )
            mask = np.asarray(img, dtype=np.int32)
    except FileNotFoundError:
        raise ModusegError(f"mask {path} does not exist; check the dataset's mask folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ModusegError(f"mask {path} is unreadable or corrupt ({exc}); replace or remove it") from None
    if expected_hw is not None and mask.shape != tuple(expected_hw):
        raise ModusegError(
            f"mask {path} is {mask.shape[0]}×{mask.shape[1]} but its image is "
            f"{expected_hw[0]}×{expected_hw[1]}; masks must match their image's size"
        )
    return mask


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map (256×3 uint8); 255 is white-ish 'ignore'."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``target``, on failure it is removed.

    Works for files and directories, so nothing half-written is ever left at ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.rmdir()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_png(path: Path | str, classes: np.ndarray, palette: np.ndarray | None = None) -> None:
    """A class map → palette PNG (VOC colours by default), written atomically."""
    from PIL import Image

    if classes.min(initial=0) < 0 or classes.max(initial=0) > 255:
        raise ValueError("class maps must hold ids 0..255")
    img = Image.fromarray(classes.astype(np.uint8), mode="P")
    img.putpalette((voc_palette() if palette is None else palette).ravel().tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours over the image (background and ignore left as they are)."""
    colours = voc_palette()[classes.astype(np.uint8)]
    painted = (classes > 0) & (classes != 255)
    out = image.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    return out.astype(np.uint8)


def write_jpeg(path: Path | str, image: np.ndarray, quality: int = 90) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=quality)


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)

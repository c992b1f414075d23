"""Writing files atomically (a killed process leaves no half-written file), the VOC palette, and the
listeners that learn which files a command wrote (``outputs.OutputDir``)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


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


#: Called with the path of every file or folder ``atomic_path`` puts in place (``outputs.OutputDir``
#: listens, to know which files a command wrote).
_WRITE_LISTENERS: list[Callable[[Path], None]] = []


def add_write_listener(listener: Callable[[Path], None]) -> None:
    _WRITE_LISTENERS.append(listener)


def remove_write_listener(listener: Callable[[Path], None]) -> None:
    with contextlib.suppress(ValueError):
        _WRITE_LISTENERS.remove(listener)


def notify_written(path: Path | str) -> None:
    """Tell the listeners that ``path`` now holds something this process wrote."""
    for listener in list(_WRITE_LISTENERS):
        listener(Path(path))


def temp_name(name: str) -> str:
    """A temporary's name beside ``name``: ``.NAME.PID-RANDOM.tmp``; the writer's process id lets a
    later process tell a stale temporary (its writer is gone) from one being written right now."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def temp_writer_alive(name: str) -> bool:
    """Whether the process that is writing the temporary ``name`` (``temp_name``) still runs here."""
    parts = name.rsplit(".", 2)
    pid_text = parts[1].split("-", 1)[0] if len(parts) == 3 else ""
    if not pid_text.isdigit():
        return False  # not written by temp_name (an older moduseg): nobody is writing it
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``target``, on failure it is removed.

    Works for files and directories, so nothing half-written is ever left at ``target`` (a folder
    ``target`` is replaced whole: use it only for folders the caller owns whole, such as a cache
    entry). A killed process leaves the temporary ``.NAME.PID-RANDOM.tmp`` behind; the next run
    of the command that owns the folder removes it (``outputs.OutputDir``, ``cache.StageCache``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / temp_name(target.name)
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
    notify_written(target)


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
    """Blend the class colours over the image (background and ignore left as they are).

    Works through blocks of rows, so a very large photo costs one uint8 copy of it, not a
    float32 one."""
    if image.shape[:2] != classes.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and class map {classes.shape} differ in size")
    palette = voc_palette()
    out = np.array(image, dtype=np.uint8, copy=True)
    step = max(1, (1 << 20) // max(1, classes.shape[1]))
    for y in range(0, classes.shape[0], step):
        block_classes = classes[y : y + step]
        painted = (block_classes > 0) & (block_classes != 255)
        if not painted.any():
            continue
        block = out[y : y + step]
        colours = palette[block_classes[painted].astype(np.uint8)]
        mixed = (1 - alpha) * block[painted].astype(np.float32) + alpha * colours
        block[painted] = mixed.astype(np.float32).astype(np.uint8)
    return out


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

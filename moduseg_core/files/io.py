"""Reading images and masks with one-line errors.

Writing lives in ``moduseg_core.files.writing``; its names are imported here as well, so
``from moduseg_core.files.io import write_png, atomic_path`` keeps working for plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.files.writing import (  # noqa: F401  (re-exported: plugins and callers import them from here)
    add_write_listener,
    atomic_path,
    notify_written,
    overlay,
    remove_path,
    remove_write_listener,
    temp_name,
    temp_writer_alive,
    voc_palette,
    write_jpeg,
    write_json,
    write_png,
    write_text,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Images with more pixels are refused before they are decoded (``method.max_image_pixels``):
#: 150 MP, e.g. 15000×10000, decodes to 450 MB of RGB.
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000

#: EXIF tag 0x0112 (Orientation); 1 = as stored, 2..8 = flipped and/or turned.
_ORIENTATION = 0x0112
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_MASK_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")


def _reason(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open(path: Path, what: str, max_pixels: int | None) -> Any:
    """``Image.open`` (header only) with one-line errors. moduseg's own ``max_pixels`` guard
    replaces Pillow's decompression-bomb check, which would refuse (or warn about) images
    that the guard accepts."""
    from PIL import Image, UnidentifiedImageError

    _loosen_pillow_limit(max_pixels)
    if path.is_dir():
        raise ModusegError(f"{what} {path} is a folder, not an image file; point at the image itself")
    try:
        img = Image.open(path)
    except FileNotFoundError as exc:
        hint = "check the dataset root and split list" if what == "image" else "check the dataset's mask folder"
        raise ModusegError(f"{what} {path} does not exist; {hint}") from exc
    except PermissionError as exc:
        raise ModusegError(f"{what} {path} cannot be read (permission denied); fix its permissions") from exc
    except Image.DecompressionBombError as exc:  # over twice the guard: Pillow refuses before we see the size
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"has {int(found.group(1))} pixels ({int(found.group(1)) / 1e6:.1f} MP)" if found else "is far larger"
        raise ModusegError(
            f"{what} {path} {size}, more than method.max_image_pixels={max_pixels}; downscale the file, or raise the "
            "limit with --set method.max_image_pixels=N (decoding takes 3 bytes a pixel)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ModusegError(f"{what} {path} is unreadable or corrupt ({_reason(exc)}); replace or remove it") from exc
    width, height = img.size
    if width < 1 or height < 1:
        img.close()
        raise ModusegError(f"{what} {path} is {width}×{height} pixels (empty); replace or remove it")
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ModusegError(
            f"{what} {path} is {width}×{height} ({width * height / 1e6:.1f} MP), more than "
            f"method.max_image_pixels={max_pixels} ({max_pixels / 1e6:.1f} MP); downscale the file, or raise the "
            "limit with --set method.max_image_pixels=N (decoding takes 3 bytes a pixel)"
        )
    return img


_PILLOW_LIMIT_SET: set[int | None] = set()


def _loosen_pillow_limit(max_pixels: int | None) -> None:
    from PIL import Image

    if max_pixels in _PILLOW_LIMIT_SET:
        return
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and (max_pixels is None or current < max_pixels):
        Image.MAX_IMAGE_PIXELS = max_pixels
    import warnings

    # over the guard: refused by moduseg with its own message; under it: accepted on purpose
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    _PILLOW_LIMIT_SET.add(max_pixels)


def exif_oriented(img: Any) -> Any:
    """Apply the EXIF orientation (``ImageOps.exif_transpose``) when the file has one other than 1;
    an unreadable EXIF block counts as none (viewers ignore it too)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 — malformed EXIF of any kind: the picture itself decodes fine
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _bit_depth(img: Any, default: int) -> tuple[int, bool]:
    """(bits, signed) of an integer image: a TIFF says so in BitsPerSample / SampleFormat;
    PNG and PPM/PGM integer images are 16-bit (Pillow scales PGM's maxval to 65535)."""
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        fmt = tags.get(339)
        fmt = fmt[0] if isinstance(fmt, tuple) and fmt else fmt
        if isinstance(bits, int) and 1 <= bits <= 32:
            return bits, fmt == 2
    return default, False


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _scale_to_8bit(values: np.ndarray, maxval: int) -> np.ndarray:
    """Integers 0..maxval → 0..255 (rounded): 65535 → 255, 111·257 → 111. Negative values → 0."""
    wide = np.clip(values.astype(np.int64, copy=False), 0, maxval)
    return ((wide * 255 + maxval // 2) // maxval).astype(np.uint8)


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """``uint8 H×W×4`` → RGB over a white background (what viewers show on a white page);
    fully opaque pixels keep their colour exactly."""
    alpha = rgba[:, :, 3]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    a = alpha.astype(np.uint16)[:, :, None]
    out = (rgba[:, :, :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb(img: Any, path: Path) -> np.ndarray:
    """A loaded Pillow image of any mode → ``uint8 H×W×3`` (see docs/formats.md, "Images")."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        bits, _ = _bit_depth(img, 16)
        return _gray_to_rgb(_scale_to_8bit(np.asarray(img), (1 << bits) - 1))
    if mode == "I":
        # 32-bit integers: a TIFF that declares at most 16 bits is read by them; otherwise the data is
        # 16-bit when every value fits 0..65535 (how 16-bit pictures are kept in 32-bit containers:
        # Pillow's own I;16 -> I, PGM), else it spans the full 32-bit range (negative values -> 0)
        values = np.asarray(img)
        bits, signed = _bit_depth(img, 32)
        if bits > 16:
            fits = int(values.min(initial=0)) >= 0 and int(values.max(initial=0)) <= 65535
            bits, signed = (16, False) if fits else (32, signed or values.dtype.kind == "i")
        return _gray_to_rgb(_scale_to_8bit(values, (1 << (bits - 1 if signed else bits)) - 1))
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ModusegError(f"image {path} has NaN or infinite pixels (32-bit float image); replace or remove it")
        high = float(values.max(initial=0.0))
        scale = 255.0 if high <= 1.0 else 1.0 if high <= 255.0 else 255.0 / 65535.0 if high <= 65535.0 else None
        if scale is None:
            raise ModusegError(
                f"image {path} has float pixels up to {high:g}, outside the ranges 0..1, 0..255 and 0..65535 read "
                "as images; rescale it"
            )
        return _gray_to_rgb(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except ValueError as exc:
            raise ModusegError(
                f"image {path} has mode {mode}, which cannot be converted to RGB ({_reason(exc)})"
            ) from exc
        return _composite_white(np.asarray(rgba))
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError as exc:
        raise ModusegError(f"image {path} has mode {mode}, which cannot be converted to RGB ({_reason(exc)})") from exc


def image_size(path: Path | str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """``(height, width)`` of an image as ``read_image`` returns it (EXIF orientation applied),
    from the file's header; the same errors as ``read_image`` for missing or unreadable files."""
    path = Path(path)
    with _open(path, "image", max_pixels) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 — as in exif_oriented
            orientation = 1
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def read_image(path: Path | str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """→ ``uint8 H×W×3`` RGB, in the displayed orientation (EXIF applied).

    Every Pillow mode is decoded to 8-bit RGB by its real range: 16-bit (and 12-bit TIFF)
    grayscale is scaled (65535 → 255), not clipped; transparency is composited over white;
    palette, 1-bit, CMYK and YCbCr go through Pillow's conversion. Multi-frame files give
    their first frame. An image with more than ``max_pixels`` pixels is refused before it is
    decoded; anything that cannot be decoded is refused with a one-line error naming the file.
    """
    from PIL import Image

    path = Path(path)
    with _open(path, "image", max_pixels) as img:
        try:
            img.load()
            oriented = exif_oriented(img)
            return _to_rgb(oriented, path)
        except ModusegError:
            raise
        except MemoryError as exc:
            raise ModusegError(
                f"image {path} ({img.size[0]}×{img.size[1]}) does not fit in memory; downscale it or lower "
                "--set method.max_image_pixels"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise ModusegError(f"image {path} is unreadable or corrupt ({_reason(exc)}); replace or remove it") from exc


def read_mask(
    path: Path | str, expected_hw: tuple[int, int] | None = None, n_classes: int | None = None, *,
    against: str = "its image",
) -> np.ndarray:
    """A class-index PNG (palette, grayscale or 1-bit) → ``int32 H×W``, in the displayed
    orientation (an EXIF orientation in the mask file is applied, as for images).

    ``expected_hw``: the size it must have (its image's, as ``read_image`` returns it; ``against``
    names that reference in the error); ``n_classes``: refuse ids outside ``0..n_classes-1`` other
    than 255 (ignore). Lossy JPEG files are refused: compression invents class ids at edges."""
    path = Path(path)
    limit = (
        DEFAULT_MAX_IMAGE_PIXELS
        if expected_hw is None
        else max(DEFAULT_MAX_IMAGE_PIXELS, expected_hw[0] * expected_hw[1])
    )
    with _open(path, "mask", limit) as img:
        if img.format in ("JPEG", "MPO"):
            raise ModusegError(
                f"mask {path} is a JPEG file; masks must be lossless (PNG): JPEG compression changes class ids "
                "along every edge"
            )
        if img.mode not in _MASK_MODES:
            raise ModusegError(
                f"mask {path} has mode {img.mode}; masks must be palette, grayscale or 1-bit PNGs of class ids "
                "(a colour-coded RGB mask must be mapped to class ids first)"
            )
        try:
            img.load()
            mask = np.asarray(exif_oriented(img), dtype=np.int32)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ModusegError(f"mask {path} is unreadable or corrupt ({_reason(exc)}); replace or remove it") from exc
    if expected_hw is not None and mask.shape != tuple(expected_hw):
        turned = mask.shape == tuple(expected_hw)[::-1]
        hint = (
            " (it is the image turned by 90°: if the photo carries an EXIF orientation tag, give its mask in the "
            "displayed orientation, as viewers and annotation tools show it)"
            if turned
            else ""
        )
        raise ModusegError(
            f"mask {path} is {mask.shape[0]}×{mask.shape[1]} but {against} is "
            f"{expected_hw[0]}×{expected_hw[1]}{hint}; masks must match their image's size"
        )
    if n_classes is not None:
        ids = np.unique(mask)
        bad = ids[(ids != 255) & ((ids < 0) | (ids >= n_classes))]
        if len(bad):
            raise ModusegError(
                f"mask {path} holds class id {int(bad[0])}, outside 0..{n_classes - 1} (and 255 = ignore) for the "
                f"{n_classes} classes; use the class list these masks were made with"
            )
    return mask

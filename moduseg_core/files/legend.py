"""A class legend under an overlay: the names and colours of the classes the prediction holds, so an
overlay JPEG says which colour means what."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moduseg_core.files.writing import voc_palette


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def present_classes(classes: np.ndarray, n_classes: int | None = None) -> list[int]:
    """Class ids in ``classes`` other than background (0) and ignore (255), ascending."""
    ids = [int(c) for c in np.unique(classes) if c not in (0, 255)]
    return [c for c in ids if n_classes is None or c < n_classes]


def legend_strip(
    width: int, ids: Sequence[int], class_names: Sequence[str], palette: np.ndarray | None = None
) -> np.ndarray:
    """An ``H×width×3`` uint8 strip: one swatch and name per class id, wrapped onto as many lines as
    needed (``"background only"`` when ``ids`` is empty)."""
    from PIL import Image, ImageDraw

    palette = voc_palette() if palette is None else palette
    size = max(11, min(28, width // 45))
    font = _font(size)
    pad, gap, box = max(4, size // 3), max(8, size), size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_width(text: str) -> int:
        left, _, right, _ = probe.textbbox((0, 0), text, font=font)
        return int(right - left)

    entries = [(palette[c % 256], class_names[c] if c < len(class_names) else f"class {c}") for c in ids]
    lines: list[list[tuple[np.ndarray | None, str, int]]] = [[]]
    x = pad
    if not entries:
        lines = [[(None, "background only (no class predicted)", text_width("background only (no class predicted)"))]]
    for colour, name in entries:
        w = box + 4 + text_width(name)
        if lines[-1] and x + w > width - pad:
            lines.append([])
            x = pad
        lines[-1].append((colour, name, w))
        x += w + gap
    line_h = size + pad
    strip = Image.new("RGB", (width, pad + line_h * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        x, y = pad, pad + row * line_h
        for colour, name, w in line:
            if colour is not None:
                draw.rectangle(
                    [x, y + 1, x + box - 1, y + box], fill=tuple(int(v) for v in colour), outline=(40, 40, 40)
                )
                x += box + 4
            draw.text((x, y), name, fill=(20, 20, 20), font=font)
            x += w - (box + 4 if colour is not None else 0) + gap
    return np.asarray(strip)


def with_legend(overlay_image: np.ndarray, classes: np.ndarray, class_names: Sequence[str],
                palette: np.ndarray | None = None) -> np.ndarray:
    """``overlay_image`` (``H×W×3`` uint8) with the legend of the classes in ``classes`` below it."""
    strip = legend_strip(overlay_image.shape[1], present_classes(classes, len(class_names)), class_names, palette)
    return np.concatenate([np.asarray(overlay_image, np.uint8)[..., :3], strip], axis=0)

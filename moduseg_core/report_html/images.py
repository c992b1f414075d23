"""The pictures and per-image numbers of an HTML report: small JPEG thumbnails of the photos,
transparent mask overlays with the masks' outlines drawn, per-image IoU, and the confusion matrix
summed over the images the report shows. numpy and Pillow only."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moduseg_core.files.writing import voc_palette

#: Thumbnails are at most this many pixels wide (and ``THUMB_HEIGHT`` high).
THUMB_WIDTH = 320
THUMB_HEIGHT = 320
#: Alpha of a mask's fill and of its outline in the overlays (0..255).
FILL_ALPHA = 110
EDGE_ALPHA = 255
IGNORE = 255


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def thumb_size(
    height: int, width: int, max_width: int = THUMB_WIDTH, max_height: int = THUMB_HEIGHT
) -> tuple[int, int]:
    """(width, height) of the thumbnail of an ``height × width`` picture; never enlarged."""
    scale = min(1.0, max_width / max(1, width), max_height / max(1, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def photo_jpeg(image: np.ndarray, size: tuple[int, int], quality: int = 72) -> bytes:
    """An ``H×W×3`` uint8 photo as a JPEG of ``size`` (width, height)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3].astype(np.uint8)))
    if picture.size != size:
        bilinear = Image.BILINEAR  # type: ignore[attr-defined]  # Pillow >= 9 has it; its stubs list Resampling only
        picture = picture.resize(size, bilinear)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def resize_labels(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map resized to ``size`` (width, height) by nearest neighbour (ids stay ids)."""
    height, width = classes.shape
    if (width, height) == size:
        return classes
    rows = np.minimum((np.arange(size[1]) + 0.5) * height / size[1], height - 1).astype(np.intp)
    cols = np.minimum((np.arange(size[0]) + 0.5) * width / size[0], width - 1).astype(np.intp)
    return classes[rows[:, None], cols[None, :]]


def edges(classes: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (the masks' outlines, one pixel wide on each side)."""
    edge = np.zeros(classes.shape, bool)
    vertical = classes[1:, :] != classes[:-1, :]
    horizontal = classes[:, 1:] != classes[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def mask_overlay_png(classes: np.ndarray, size: tuple[int, int], palette: np.ndarray | None = None) -> bytes:
    """A transparent palette PNG of ``size`` (width, height): each class in its colour, its fill
    half transparent and its outline opaque; background (0) clear, ignore (255) faint."""
    from PIL import Image

    palette = voc_palette() if palette is None else palette
    small = resize_labels(np.asarray(classes), size).astype(np.int64)
    present = [int(c) for c in np.unique(small) if c != 0]
    # compact indices: 0 clear, 1..n fills, n+1..2n outlines (a PNG palette has 256 entries)
    present = present[:127]
    lookup = np.zeros(max(256, int(small.max(initial=0)) + 1), np.uint8)
    for i, c in enumerate(present):
        lookup[c] = i + 1
    index = lookup[small]
    edge = edges(small) & (index > 0)
    index = np.where(edge, index + len(present), index).astype(np.uint8)
    colours = np.zeros((256, 3), np.uint8)
    alpha = np.zeros(256, np.uint8)
    for i, c in enumerate(present):
        colour = palette[c % 256]
        colours[i + 1] = colour
        colours[i + 1 + len(present)] = colour
        alpha[i + 1] = 70 if c == IGNORE else FILL_ALPHA
        alpha[i + 1 + len(present)] = 90 if c == IGNORE else EDGE_ALPHA
    picture = Image.fromarray(index, mode="P")
    picture.putpalette(colours[: 2 * len(present) + 1].ravel().tolist())
    picture.info["transparency"] = bytes(alpha[: 2 * len(present) + 1].tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True, transparency=bytes(alpha[: 2 * len(present) + 1].tolist()))
    return buffer.getvalue()


def confusion(gt: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``n×n`` pixel counts, rows ground truth, columns prediction; ignore (255) and ids outside
    ``0..n-1`` in the ground truth are left out (a predicted id outside the range counts nowhere)."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = (gt >= 0) & (gt < n_classes) & (pred >= 0) & (pred < n_classes)
    return np.bincount(gt[keep] * n_classes + pred[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def image_iou(matrix: np.ndarray) -> float | None:
    """The image's mean IoU over the classes in its ground truth or its prediction (None: no pixels)."""
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    if not present.any():
        return None
    return float((tp[present] / union[present]).mean())


@dataclass
class Item:
    """One gallery image: its id, its numbers and its pictures (data URIs)."""

    id: str
    width: int
    height: int
    photo: str
    gt: str | None = None
    preds: dict[str, str | None] = field(default_factory=dict)
    gt_classes: list[int] = field(default_factory=list)
    pred_classes: dict[str, list[int]] = field(default_factory=dict)
    iou: dict[str, float | None] = field(default_factory=dict)


def _read(path: Path | None, reader) -> np.ndarray | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return reader(path)
    except Exception:  # noqa: BLE001 (a report shows what it can: an unreadable file is a missing picture)
        return None


@dataclass
class Stats:
    """Per-image numbers of every sample with a prediction (before any gallery cap)."""

    ids: list[str] = field(default_factory=list)
    iou: dict[str, dict[str, float | None]] = field(default_factory=dict)  # column → id → IoU
    matrix: np.ndarray | None = None  # the first column's confusion matrix over every image with ground truth
    predicted: int = 0
    with_gt: int = 0


def _maps(sample, predictions: dict[str, Path], n_classes: int):
    from moduseg_core.files.io import read_mask

    gt = _read(getattr(sample, "mask_path", None), lambda p: read_mask(p))
    maps = {
        name: _read(Path(folder) / f"{sample.id}.png", lambda p: read_mask(p)) for name, folder in predictions.items()
    }
    return gt, maps


def image_stats(samples: Sequence, predictions: dict[str, Path], n_classes: int) -> Stats:
    """Per-image IoU of each prediction column (column name → folder of ``{id}.png``) and the
    confusion matrix of the first column, over the samples (``id``, ``image_path``, ``mask_path``)
    that have a prediction in some column."""
    stats = Stats(iou={name: {} for name in predictions}, matrix=np.zeros((n_classes, n_classes), np.int64))
    first = next(iter(predictions), None)
    for sample in samples:
        if not any((Path(folder) / f"{sample.id}.png").is_file() for folder in predictions.values()):
            continue
        gt, maps = _maps(sample, predictions, n_classes)
        stats.ids.append(str(sample.id))
        stats.predicted += 1
        stats.with_gt += gt is not None
        for name, pred in maps.items():
            ok = gt is not None and pred is not None and pred.shape == gt.shape
            matrix = confusion(gt, pred, n_classes) if ok else None
            stats.iou[name][str(sample.id)] = image_iou(matrix) if matrix is not None else None
            if matrix is not None and name == first:
                stats.matrix += matrix
    return stats


def choose(ids: list[str], iou: dict[str, float | None], limit: int) -> list[str]:
    """The ids a gallery capped at ``limit`` shows: all when they fit; else the worst half by IoU
    and the rest spread evenly over the others (in IoU order), so both ends and the middle show."""
    if len(ids) <= limit:
        return list(ids)
    order = sorted(ids, key=lambda i: (iou.get(i) is None, iou.get(i) if iou.get(i) is not None else 0.0, i))
    worst = limit // 2
    rest = order[worst:]
    want = limit - worst
    picks = [rest[round(k * (len(rest) - 1) / max(1, want - 1))] for k in range(want)] if want > 1 else rest[:want]
    chosen = set(order[:worst]) | set(picks)
    for i in rest:  # rounding may pick one twice: fill up in order
        if len(chosen) >= limit:
            break
        chosen.add(i)
    return [i for i in ids if i in chosen]


def build_items(
    samples: Sequence,
    predictions: dict[str, Path],
    n_classes: int,
    ids: Sequence[str],
    stats: Stats,
    *,
    thumb_width: int = THUMB_WIDTH,
) -> list[Item]:
    """Gallery items (thumbnails as data URIs) of the samples whose id is in ``ids``."""
    from moduseg_core.files.io import read_image

    wanted = set(ids)
    items: list[Item] = []
    for sample in samples:
        if str(sample.id) not in wanted:
            continue
        gt, maps = _maps(sample, predictions, n_classes)
        image = _read(Path(sample.image_path), lambda p: read_image(p))
        reference = next((m for m in (gt, *maps.values()) if m is not None), None)
        if image is None and reference is None:
            continue
        shown = image if image is not None else reference
        assert shown is not None  # both None is skipped just above
        height, width = shown.shape[:2]
        size = thumb_size(height, width, thumb_width, thumb_width)
        photo = data_uri(photo_jpeg(image, size), "image/jpeg") if image is not None else ""
        item = Item(id=str(sample.id), width=size[0], height=size[1], photo=photo)
        if gt is not None:
            item.gt = data_uri(mask_overlay_png(gt, size), "image/png")
            item.gt_classes = [int(c) for c in np.unique(gt) if 0 < c < n_classes]
        for name, pred in maps.items():
            item.iou[name] = stats.iou.get(name, {}).get(item.id)
            if pred is None:
                item.preds[name] = None
                item.pred_classes[name] = []
                continue
            item.preds[name] = data_uri(mask_overlay_png(pred, size), "image/png")
            item.pred_classes[name] = [int(c) for c in np.unique(pred) if 0 < c < n_classes]
        items.append(item)
    return items

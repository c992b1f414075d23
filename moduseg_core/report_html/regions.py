"""Thumbnails of bank regions (from a bank's ``provenance.jsonl``): the bank image cropped around the region,
the region outlined in its class's colour, a small JPEG as a data URI. numpy and Pillow only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.pipeline.provenance import decode_rle
from moduseg_core.report_html.images import data_uri, edges

#: Bank-region thumbnails are at most this many pixels on their longer side.
REGION_THUMB = 84


class RegionThumbs:
    """Makes region thumbnails, reading each bank image once; remembers the images it could not read."""

    def __init__(self, palette: np.ndarray, size: int = REGION_THUMB, cache: int = 64):
        self.palette = palette
        self.size = size
        self.cache: dict[str, np.ndarray | None] = {}
        self.limit = cache
        self.unreadable: list[str] = []

    def _image(self, path: str, hw: tuple[int, int]) -> np.ndarray | None:
        if path not in self.cache:
            from PIL import Image

            from moduseg_core.files.io import read_image

            try:
                image = read_image(Path(path))
                if image.shape[:2] != hw:  # the regions are at the image's working size
                    image = np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
            except Exception:  # noqa: BLE001 (a page shows what it can: text instead of the picture)
                image = None
                self.unreadable.append(path)
            if len(self.cache) >= self.limit:
                self.cache.pop(next(iter(self.cache)))
            self.cache[path] = image
        return self.cache[path]

    def region(self, entry: dict[str, Any]) -> str | None:
        """The thumbnail (data URI) of one provenance region (``Provenance.row`` / ``regions`` entry), or None."""
        from PIL import Image

        hw = (int(entry["size"][0]), int(entry["size"][1]))
        image = self._image(str(entry["path"]), hw)
        if image is None:
            return None
        x, y, w, h = (int(v) for v in entry["box"])
        pad = max(8, int(0.12 * max(w, h)))
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(hw[1], x + w + pad), min(hw[0], y + h + pad)
        mask = decode_rle(entry["rle"], hw)[y0:y1, x0:x1]
        crop = image[y0:y1, x0:x1].copy()
        scale = min(1.0, self.size / max(1, crop.shape[0], crop.shape[1]))
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        picture = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)).copy()
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
        outline = edges(small.astype(np.int32)) & small
        thick = outline.copy()  # two pixels wide, so it shows at thumbnail size
        thick[1:] |= outline[:-1]
        thick[:, 1:] |= outline[:, :-1]
        colour = self.palette[int(entry["class"]) % 256]
        picture[~small] = (picture[~small] * 0.55).astype(np.uint8)  # the region bright, the rest dimmed
        picture[thick] = colour
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=70, optimize=True)
        return data_uri(buffer.getvalue(), "image/jpeg")

    def unreadable_note(self) -> str:
        """One sentence about the bank images that could not be read, or ''."""
        if not self.unreadable:
            return ""
        return (
            f"{len(self.unreadable)} bank image(s) could not be read any more (e.g. {self.unreadable[0]}): "
            "their regions are named in text instead of pictures."
        )

"""The Python API for the everyday case: load a saved bank, segment an image or a folder.

::

    import moduseg_core as ms

    seg = ms.Segmenter.from_bank("banks/voc")      # the bank's encoder and aggregator, SLIC proposals
    pred = seg("photo.jpg")                        # a path, a PIL image or an H×W×3 uint8 array
    pred.classes, pred.masks, pred.labels, pred.scores, pred.names
    pred.to_png("photo.png"); pred.save_overlay("photo_overlay.jpg"); pred.to_coco_rle()
    for path, pred in seg.folder("photos/"): ...

The same ``Predictor`` as ``moduseg predict`` (so the same class maps); nothing heavy is imported
until ``from_bank`` builds the components.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moduseg_core.contract.errors import ModusegError
from moduseg_core.pipeline.provenance import rle_counts, rle_string  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Segmentation:
    """One image's result. ``classes``: int32 H×W class map (0 background, 255 never); ``masks``: bool
    K×H×W, the masks that survived NMS; ``labels`` (int K) and ``scores`` (float K)
    belong to them; ``class_names`` are the bank's (index = class id)."""

    classes: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        """The class name of each mask."""
        return [self.class_names[int(c)] for c in self.labels]

    @property
    def present(self) -> list[str]:
        """The names of the classes the class map holds (background left out)."""
        return [self.class_names[int(c)] for c in np.unique(self.classes) if 0 < c < len(self.class_names)]

    def to_png(self, path: Path | str) -> Path:
        """The class map as a palette PNG (VOC colours), written atomically."""
        from moduseg_core.files.writing import write_png

        write_png(path, self.classes)
        return Path(path)

    def overlay(self, image: np.ndarray | None = None, *, legend: bool = True, alpha: float = 0.5) -> np.ndarray:
        """The class colours over the image (H×W×3 uint8), with a class legend strip below it."""
        from moduseg_core.files.legend import with_legend
        from moduseg_core.files.writing import overlay

        base = self.image if image is None else _as_array(image)
        if base is None:
            raise ModusegError("overlay needs the image: pass it, e.g. pred.overlay(image)")
        picture = overlay(base, self.classes, alpha)
        return with_legend(picture, self.classes, self.class_names) if legend else picture

    def save_overlay(self, path: Path | str, image: np.ndarray | None = None, *, legend: bool = True) -> Path:
        from moduseg_core.files.writing import write_jpeg

        write_jpeg(path, self.overlay(image, legend=legend))
        return Path(path)

    def to_coco_rle(self) -> list[dict[str, Any]]:
        """One entry per predicted class (its painted region), as COCO's segmentation results hold
        them: ``segmentation`` is a compressed RLE ``{"size": [h, w], "counts": str}`` (pycocotools'
        ``mask.decode`` reads it), with ``category_id`` (the class id), ``category``, ``score`` (the
        best score of the class's masks), ``area`` and ``bbox`` ``[x, y, w, h]``."""
        out = []
        for c in np.unique(self.classes):
            if c == 0 or c >= len(self.class_names):
                continue
            region = self.classes == c
            ys, xs = np.nonzero(region)
            mine = self.scores[self.labels == c]
            out.append({
                "category_id": int(c),
                "category": self.class_names[int(c)],
                "score": float(mine.max()) if len(mine) else None,
                "area": int(region.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "segmentation": {"size": list(region.shape), "counts": rle_string(region)},
            })
        return out


def _as_array(image: Any) -> np.ndarray:
    """A path, a PIL image or an array → uint8 H×W×3."""
    if isinstance(image, (str, Path)):
        from moduseg_core.files.io import read_image

        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ModusegError(
            f"image of shape {array.shape} and dtype {array.dtype} is not an H×W×3 uint8 RGB array; pass a path, "
            "a PIL image or such an array"
        )
    return np.ascontiguousarray(array)


class Segmenter:
    """A saved bank with the components that query it; call it on an image."""

    def __init__(self, predictor: Any, class_names: Sequence[str]):
        self.predictor = predictor
        self.class_names = list(class_names)

    @classmethod
    def from_bank(
        cls,
        bank: Path | str,
        *,
        proposer: str | None = None,
        proposer_options: dict[str, Any] | None = None,
        config: Path | str | None = None,
        sets: Sequence[str] = (),
    ) -> Segmenter:
        """Load ``bank`` (a folder of ``moduseg build-bank`` or a run's ``bank/``) with its own encoder,
        aggregator and index. The proposer is ``proposer`` (default: the config's, SLIC) with
        ``proposer_options``; ``config`` (a YAML run config) and ``sets`` (``"method.top_k=10"``, as
        ``--set``) set anything else, as on the command line."""
        from moduseg_core.contract.config import apply_overrides, load_config
        from moduseg_core.pipeline.bank import Bank
        from moduseg_core.pipeline.runner import make_predictor

        cfg = apply_overrides(
            load_config(Path(config) if config else None), choices={"proposer": proposer}, sets=list(sets)
        )
        loaded = Bank.load(bank)
        data = cfg.model_dump()
        for kind in ("encoder", "aggregator"):
            data[kind] = {"name": loaded.manifest["components"][kind]["name"],
                          "options": loaded.manifest["components"][kind]["options"]}
        if proposer_options:
            data["proposer"]["options"] = {**data["proposer"]["options"], **proposer_options}
        cfg = type(cfg).model_validate(data)
        return cls(make_predictor(cfg, loaded), loaded.class_names)

    def __call__(self, image: Any) -> Segmentation:
        array = _as_array(image)
        (prediction,) = self.predictor.predict_batch([array], [None])
        masks = prediction.masks
        if masks.shape[1:] != array.shape[:2]:  # an image over method.work_pixels: masks at its working size
            from moduseg_core.method.scale import resize_nearest

            masks = np.stack([resize_nearest(m, array.shape[:2]) for m in masks]) if len(masks) else (
                np.zeros((0, *array.shape[:2]), bool))
        return Segmentation(
            classes=np.asarray(prediction.semantic, np.int32),
            masks=masks,
            labels=np.asarray(prediction.labels, np.int32),
            scores=np.asarray(prediction.scores, np.float32),
            class_names=self.class_names,
            image=array,
        )

    def explain(self, image: Any) -> dict[str, Any]:
        """Why each mask of ``image`` got its label, as a line of ``explain.jsonl`` (``pipeline/evidence.py``):
        ``masks``, every pooled mask with its ``label``, ``score``, ``neighbours`` (bank ``row``, ``image`` id,
        ``class``, ``similarity``), ``votes``, ``margin`` and whether NMS ``kept`` it. A bank without
        provenance names no neighbour image (``bank_provenance`` false: rebuild it to explain)."""
        from moduseg_core.pipeline.evidence import to_json

        array = _as_array(image)
        self.predictor.explain = True
        try:
            (prediction,) = self.predictor.predict_batch([array], [None])
        finally:
            self.predictor.explain = False
        return to_json(None, prediction.evidence, self.predictor.bank, self.class_names)

    def folder(self, folder: Path | str) -> Iterator[tuple[Path, Segmentation]]:
        """Every image of ``folder`` (sorted), with its result, one at a time."""
        from moduseg_core.files.progress import progress
        from moduseg_core.pipeline.runner import image_paths

        paths = image_paths([Path(folder)])
        for path in progress(paths, total=len(paths), desc="segment"):
            yield path, self(path)

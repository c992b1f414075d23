"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from moduseg_core.contract import plugins as _plugins


@contextmanager
def plugins_only(names: str, **env: str) -> Iterator[pytest.MonkeyPatch]:
    """Only the named entry points load (a comma list; "" loads none), with ``env`` set as well;
    the registry is rebuilt on entry and on exit. For module-scoped fixtures and single blocks."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODUSEG_LOAD_PLUGINS", names)
        for key, value in env.items():
            mp.setenv(key, value)
        _plugins.reset()
        try:
            yield mp
        finally:
            _plugins.reset()


@pytest.fixture
def only_plugins() -> Iterator[Callable[..., pytest.MonkeyPatch]]:
    """The shared plugin fixture: ``only_plugins("aggregators,indexes", MODUSEG_PROGRESS="0")`` loads only
    those entry points for this test (so half-written sibling plugins cannot break it); the
    environment and the registry are restored afterwards."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield lambda names, **env: stack.enter_context(plugins_only(names, **env))


def coco_mini_root() -> Path:
    """The real-image test set: ``$MODUSEG_COCO_MINI``, else ``<repo>/../shared/data/coco-mini``."""
    override = os.environ.get("MODUSEG_COCO_MINI")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-mini"


def val_photos(root: Path, count: int, shrink: int) -> list:
    """The first ``count`` photos of coco-mini's val split, each side divided by ``shrink`` (bilinear): real
    images small enough for the proposers' tests, whose cost grows with the pixels."""
    import numpy as np
    from PIL import Image

    from moduseg_core.files.io import read_image

    out = []
    for i in (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:count]:
        image = Image.fromarray(read_image(root / "JPEGImages" / f"{i}.jpg"))
        out.append(np.asarray(image.resize((image.width // shrink, image.height // shrink), Image.BILINEAR)))
    return out


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """coco-mini's root folder (JPEGImages/, SegmentationClass/, ImageSets/...).

    Absent data skips the real-image tests on a contributor's machine but fails them in CI,
    where a skipped core path would hide a defect."""
    root = coco_mini_root()
    if not (root / "JPEGImages").is_dir():
        message = f"coco-mini not found at {root} (set MODUSEG_COCO_MINI)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture
def broken_voc(coco_mini, tmp_path) -> tuple[Path, str, str]:
    """A 5+4 image VOC copy of coco-mini in which one bank and one eval image are corrupt."""
    root = tmp_path / "voc"
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClassVOC"):
        (root / sub).mkdir(parents=True)
    shutil.copy(coco_mini / "image_labels_voc.json", root)
    for split, n in (("train", 5), ("val", 4)):
        ids = (coco_mini / f"ImageSets/Segmentation/{split}.txt").read_text().split()[:n]
        (root / f"ImageSets/Segmentation/{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
            shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", root / "SegmentationClassVOC")
    bad_bank = (root / "ImageSets/Segmentation/train.txt").read_text().split()[1]
    bad_eval = (root / "ImageSets/Segmentation/val.txt").read_text().split()[2]
    for i in (bad_bank, bad_eval):
        (root / "JPEGImages" / f"{i}.jpg").write_bytes(b"not a jpeg")
    return root, bad_bank, bad_eval

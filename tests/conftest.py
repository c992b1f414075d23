"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def coco_mini_root() -> Path:
    """The real-image test set: ``$MODUSEG_COCO_MINI``, else ``<repo>/../shared/data/coco-mini``."""
    override = os.environ.get("MODUSEG_COCO_MINI")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-mini"


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

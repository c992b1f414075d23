"""Images decoded ahead (``moduseg_core.pipeline.streaming.load_images``): order, content, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core import ModusegError
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import read_image
from moduseg_core.pipeline.streaming import load_images


def _samples(tmp_path: Path, n: int, corrupt: int | None = None) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = tmp_path / f"{i:03d}.png"
        if i == corrupt:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(id=f"{i:03d}", image_path=path, labels=(), mask_path=None))
    return samples


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("with_torch", [False, True])
def test_images_come_back_in_order_and_unchanged(tmp_path, workers, with_torch, monkeypatch):
    import sys

    if with_torch:
        pytest.importorskip("torch")  # loaded: workers > 0 go through torch's DataLoader
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)  # only the check: torch stays importable
    samples = _samples(tmp_path, 7)
    got = list(load_images(samples, workers=workers, lookahead=2))
    assert len(got) == 7
    for sample, image in zip(samples, got, strict=True):
        assert np.array_equal(image, read_image(sample.image_path))


@pytest.mark.parametrize("with_torch", [False, True])
def test_a_corrupt_image_is_one_line_naming_its_path(tmp_path, with_torch, monkeypatch):
    import sys

    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    samples = _samples(tmp_path, 5, corrupt=3)
    images = load_images(samples, workers=2, lookahead=2)
    for _ in range(3):
        next(images)
    with pytest.raises(ModusegError) as info:
        next(images)
    assert "003.png" in str(info.value) and "\n" not in str(info.value)

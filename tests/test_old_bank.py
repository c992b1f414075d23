"""A bank saved by an earlier moduseg (tests/data/bank-c6b3320: the demo preset's components on the first three
coco-mini train images, built at commit c6b3320, before the plugin-layout move, the executors and the sharded
bank store) still loads, predicts, and equals the bank this version builds from the same inputs.

The stored bank was computed on another machine: its labels (the method's decisions) must be equal, its vectors
only within float rounding, because sums and products carry their last bits from the CPU's kernels (AVX2 vs
AVX-512/AMX, thread counts). Byte-identity is asserted only between builds on one machine (tests/test_ray.py,
tests/test_kill.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.cli import main

OLD = Path(__file__).resolve().parent / "data" / "bank-c6b3320"
PRESET = Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml"


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("MODUSEG_PROGRESS", "0")


def test_an_old_bank_loads_predicts_and_equals_a_new_build(coco_mini, tmp_path):
    pytest.importorskip("onnx")
    from moduseg_core.pipeline.bank import Bank

    old = Bank.load(OLD)
    assert len(old) == 8 and old.manifest["format_version"] == 1

    bank = tmp_path / "old"
    shutil.copytree(OLD, bank)
    image = coco_mini / "JPEGImages" / f"{(coco_mini / 'ImageSets/Segmentation/val.txt').read_text().split()[0]}.jpg"
    assert main(["predict", str(image), "--bank", str(bank), "--out", str(tmp_path / "pred")]) == 0
    assert list((tmp_path / "pred").rglob("*.png"))

    new = tmp_path / "new"
    args = [
        "build-bank",
        "-c",
        str(PRESET),
        "--set",
        f"dataset.root={coco_mini}",
        "--set",
        "bank_limit=3",
        "--out",
        str(new),
    ]
    assert main(args) == 0
    built = Bank.load(new)
    np.testing.assert_array_equal(built.labels, old.labels)
    assert built.vectors.dtype == old.vectors.dtype and built.vectors.shape == old.vectors.shape
    # unit vectors: 1e-6 absolute is ~10 float32 ulps at their largest entries, far above any kernel's rounding
    # and far below what a changed rule (erosion, pooling weights, filter) moves them by
    np.testing.assert_allclose(built.vectors, old.vectors, rtol=0, atol=1e-6)

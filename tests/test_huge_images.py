"""Huge photos: ``method.work_pixels`` bounds memory, and changes nothing for images under it.

METHOD.md runs every stage at the image's native size. ModuSeg keeps that rule for every image
with at most ``work_pixels`` pixels (4 MP by default: all of VOC and COCO, whose longer sides are
500 and 640) and processes a larger one at a downscaled working copy, painting its class map back
to full size. These tests check both halves with real components (SLIC + the offline DINOv2
encoder), and measure the peak memory of ``moduseg predict`` on a 12000×9000 photo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core.method.scale import downscale_image, paint_back, resize_nearest, work_hw

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "moduseg_core" / "presets" / "coco-mini.yaml"
DEFAULT_WORK_PIXELS = 4_194_304


@pytest.mark.parametrize(
    "hw,limit,expected",
    [
        ((426, 640), DEFAULT_WORK_PIXELS, (426, 640)),
        ((2048, 2048), DEFAULT_WORK_PIXELS, (2048, 2048)),  # exactly at the limit: untouched
        ((9000, 12000), DEFAULT_WORK_PIXELS, (1773, 2364)),
        ((3000, 4000), DEFAULT_WORK_PIXELS, (1773, 2364)),
        ((1, 100_000), 65_536, (1, 65_536)),
        ((9000, 12000), None, (9000, 12000)),
    ],
)
def test_working_size(hw, limit, expected):
    got = work_hw(*hw, limit)
    assert got == expected
    if limit is not None:
        assert got[0] * got[1] <= limit


def test_voc_and_coco_sizes_are_never_downscaled(coco_mini):
    """The largest VOC (500×500) and COCO (640×640) images and every coco-mini image stay native."""
    for hw in [(500, 500), (640, 640)]:
        assert work_hw(*hw, DEFAULT_WORK_PIXELS) == hw
    for path in sorted((coco_mini / "JPEGImages").glob("*.jpg")):
        with Image.open(path) as img:
            assert work_hw(img.height, img.width, DEFAULT_WORK_PIXELS) == (img.height, img.width)


def test_paint_back_is_nearest_neighbour():
    small = np.arange(6, dtype=np.int32).reshape(2, 3)
    big = paint_back(small, (4, 6))
    assert big.dtype == np.uint8
    np.testing.assert_array_equal(big, np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))
    assert paint_back(small, (2, 3)) is small


@pytest.fixture(scope="module")
def components(coco_mini):
    """A bank from two coco-mini train images with the preset's components, and a way to predict with it."""
    from moduseg_core.contract.config import apply_overrides, load_config
    from moduseg_core.pipeline.runner import bank_from_config

    os.environ["MODUSEG_PROGRESS"] = "0"
    config = apply_overrides(load_config(PRESET), sets=[f"dataset.root={coco_mini}", "bank_limit=2"])
    bank = bank_from_config(config)
    return config, bank


def _predictor(config, bank, work_pixels):
    from moduseg_core.pipeline.runner import make_predictor

    method = config.method.model_copy(update={"work_pixels": work_pixels})
    return make_predictor(config.model_copy(update={"method": method}), bank)


def _image(coco_mini, name="000000000139"):
    return np.asarray(Image.open(coco_mini / "JPEGImages" / f"{name}.jpg").convert("RGB"))


def test_method_unchanged_under_the_limit(components, coco_mini):
    """METHOD.md, inference: proposals, features and pooling at the image's own size. With the default
    limit a coco-mini image takes exactly the path it takes with no limit at all."""
    config, bank = components
    ids = ["000000000139", "000000000790"]
    images = [_image(coco_mini, n) for n in ids]
    bounded = _predictor(config, bank, DEFAULT_WORK_PIXELS)
    native = _predictor(config, bank, None)
    assert all(bounded.working_image(image) is image for image in images)
    for image, a, b in zip(images, bounded.predict_batch(images, ids), native.predict_batch(images, ids), strict=True):
        np.testing.assert_array_equal(a.semantic, b.semantic)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.semantic.shape == image.shape[:2] and len(a.labels) > 0
        assert a.masks.shape[1:] == b.masks.shape[1:] == image.shape[:2]


def test_over_the_limit_is_the_working_copy_painted_back(components, coco_mini):
    """An image over the limit gives exactly: the method on its working copy, then nearest-neighbour paint-back."""
    config, bank = components
    image = _image(coco_mini)
    limit = 65_536
    hw = work_hw(*image.shape[:2], limit)
    assert hw == (208, 313)
    bounded = _predictor(config, bank, limit).predict_batch([image], ["x"])[0]
    reference = _predictor(config, bank, None).predict_batch([downscale_image(image, hw)], ["x"])[0]
    assert bounded.semantic.shape == image.shape[:2]
    assert bounded.masks.shape[1:] == hw  # the kept masks stay at the working size
    np.testing.assert_array_equal(bounded.semantic, paint_back(reference.semantic, image.shape[:2]))
    np.testing.assert_array_equal(bounded.labels, reference.labels)


def test_precomputed_full_size_proposals_fit_the_working_copy(tmp_path, coco_mini):
    """Proposals saved at a huge photo's full size are scaled to its working copy, one mask at a time."""
    from moduseg_builtins.proposers.precomputed import PrecomputedProposer, PrecomputedProposerOptions, save_proposals

    from moduseg_core.contract.types import Proposals

    rng = np.random.default_rng(0)
    masks = rng.random((3, 301, 457)) > 0.5
    save_proposals(tmp_path / "p.npz", Proposals(masks, np.array([0.9, 0.5, 0.7], np.float32)))
    np.savez(tmp_path / "q.npz", masks=masks)
    hw = work_hw(301, 457, 70_000)
    proposer = PrecomputedProposer(PrecomputedProposerOptions(root=tmp_path))
    small = np.zeros((*hw, 3), np.uint8)
    for image_id in ("p", "q"):
        found = proposer.propose(small, image_id=image_id)
        np.testing.assert_array_equal(found.masks, np.stack([resize_nearest(m, hw) for m in masks]))
    with pytest.raises(Exception, match="has masks of 301×457 but the image is 300×457"):
        proposer.propose(np.zeros((300, 457, 3), np.uint8), image_id="p")  # not a working copy: refused


def test_bank_images_over_the_limit_are_purified_at_their_working_size(components, coco_mini):
    from moduseg_core.contract.config import apply_overrides
    from moduseg_core.pipeline.runner import bank_from_config

    config, bank = components
    small = bank_from_config(apply_overrides(config, sets=["method.work_pixels=65536"]), encoder=bank.encoder_component)
    assert small.manifest["method"]["work_pixels"] == 65536
    assert 0 < len(small) <= len(bank) and small.vectors.shape[1] == bank.vectors.shape[1]


@pytest.mark.slow
def test_peak_memory_of_predict_on_a_12000x9000_photo(tmp_path, coco_mini):
    """The issue's photo: `moduseg predict` (SLIC, offline DINOv2 at 448) on one 12000×9000 JPEG stays
    under 4 GB of peak resident memory and writes a 12000×9000 class map (it went past 8 GB before)."""
    env = {k: v for k, v in os.environ.items() if k != "MODUSEG_LOAD_PLUGINS"} | {"MODUSEG_PROGRESS": "0"}
    moduseg = [sys.executable, "-c", "import sys; from moduseg_core.cli import main; sys.exit(main(sys.argv[1:]))"]
    bank = tmp_path / "bank"
    subprocess.run(
        [*moduseg, "build-bank", "--config", str(PRESET), "--set", f"dataset.root={coco_mini}", "--set", "bank_limit=2",
         "--out", str(bank)],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )
    photo = tmp_path / "photo.jpg"
    Image.open(coco_mini / "JPEGImages" / "000000000139.jpg").resize((12000, 9000), Image.BILINEAR).save(
        photo, quality=85
    )
    # a wrapper process reports the peak of its only child, the predict run
    probe = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': done.returncode, 'err': done.stderr[-2000:],"
        " 'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            *moduseg,
            "predict",
            str(photo),
            "--bank",
            str(bank),
            "--out",
            str(tmp_path / "out"),
        ],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, result["err"]
    peak_gib = result["peak_kib"] / 2**20
    print(f"peak RSS of moduseg predict on 12000x9000: {peak_gib:.2f} GiB")
    assert peak_gib < 4.0
    with Image.open(tmp_path / "out" / "predictions" / "photo.png") as written:
        assert written.size == (12000, 9000)

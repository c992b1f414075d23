"""slic and felzenszwalb on real coco-mini photos."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import moduseg_core as ms
from moduseg_core.contract.plugins import get_spec
from moduseg_core.files.io import read_image

pytest.importorskip("skimage")

PLUGINS = "datasets,labelers,proposers,purifiers,aggregators"


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


@pytest.fixture(scope="module")
def images(coco_mini):
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]
    return [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids]


def check_runs(proposer, image, proposals, runs=None):
    """Masks are full size; the masks of each run partition the image (each pixel exactly once per run)."""
    h, w = image.shape[:2]
    assert proposals.masks.dtype == np.bool_ and proposals.masks.shape[1:] == (h, w)
    assert proposals.scores.dtype == np.float32 and np.all(proposals.scores == 1.0)
    runs = proposer.segment(image) if runs is None else runs
    counts = [len(np.unique(labels)) for labels in runs]
    assert sum(counts) == len(proposals)
    offset = 0
    for count in counts:
        coverage = proposals.masks[offset : offset + count].sum(axis=0)
        assert np.all(coverage == 1)
        assert proposals.masks[offset : offset + count].reshape(count, -1).any(axis=1).all()  # no empty mask
        offset += count


@pytest.mark.parametrize("name", ["slic", "felzenszwalb"])
def test_default_options_on_real_images(images, name):
    spec = get_spec("proposer", name)
    assert spec.extra == "skimage" and spec.requires == ("skimage",)
    proposer = ms.get_component("proposer", name)
    image = images[0]
    proposals = proposer.propose(image)
    runs = proposer.segment(image)  # deterministic: the same segments propose() used
    assert len(runs) == 3 and all(labels.shape == image.shape[:2] for labels in runs)
    assert len(proposals) > 3 * 5  # three runs, each with several segments
    check_runs(proposer, image, proposals, runs)


def test_slic_one_run_per_value(images):
    image = images[0]
    single = ms.get_component("proposer", "slic", n_segments=[40])
    double = ms.get_component("proposer", "slic", n_segments=[40, 40])
    one = single.propose(image)
    two = double.propose(image)
    assert len(two) == 2 * len(one)
    np.testing.assert_array_equal(two.masks[: len(one)], one.masks)
    np.testing.assert_array_equal(two.masks[len(one) :], one.masks)


@pytest.mark.parametrize("name,options", [("slic", {"n_segments": [30]}), ("felzenszwalb", {"scale": [300.0]})])
def test_max_side_downscales_and_upsamples(images, name, options):
    image = images[1]
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.BILINEAR))
    proposer = ms.get_component("proposer", name, max_side=320, **options)
    runs = proposer.segment(big)
    assert runs[0].shape == big.shape[:2]
    # segmented on a copy 4× smaller than big, upsampled by nearest neighbour: constant on aligned 4×4 blocks
    h, w = (big.shape[0] // 4) * 4, (big.shape[1] // 4) * 4
    blocks = runs[0][:h, :w].reshape(h // 4, 4, w // 4, 4)
    assert np.all(blocks == blocks[:, :1, :, :1])
    proposals = proposer.propose(big)
    check_runs(proposer, big, proposals, runs)
    full = ms.get_component("proposer", name, max_side=None, **options)
    assert full.segment(image[:120, :160])[0].shape == (120, 160)


def test_option_errors():
    with pytest.raises(ms.ModusegError, match=r"n_segments"):
        ms.get_component("proposer", "slic", n_segments=[])
    with pytest.raises(ms.ModusegError, match=r"n_segments"):
        ms.get_component("proposer", "slic", n_segments=[0])
    with pytest.raises(ms.ModusegError, match=r"scale"):
        ms.get_component("proposer", "felzenszwalb", scale=[-1])
    proposer = ms.get_component("proposer", "slic", n_segments=[10])
    with pytest.raises(ms.ModusegError, match=r"proposer 'slic' got an image of shape \(20, 20\)"):
        proposer.propose(np.zeros((20, 20), np.uint8))


def test_entry_point_modules_are_light():
    code = (
        "import sys\n"
        "import moduseg_builtins.datasets, moduseg_builtins.labelers\n"
        "import moduseg_builtins.proposers.skimage, moduseg_builtins.proposers.precomputed\n"
        "heavy = [m for m in ('skimage', 'cv2', 'torch', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

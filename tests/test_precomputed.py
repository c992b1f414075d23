"""The precomputed proposer and save_proposals, with masks built from real coco-mini annotations."""

from __future__ import annotations

import numpy as np
import pytest
from moduseg_builtins.proposers.precomputed import load_proposals, save_proposals
from PIL import Image

import moduseg_core as ms
from moduseg_core.contract.types import Proposals
from moduseg_core.files.io import read_image, read_mask

PLUGINS = "datasets,labelers,proposers,purifiers,aggregators"


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


@pytest.fixture(scope="module")
def real(coco_mini):
    """(id, image, class map, proposals): one mask per class region of the 81-class GT, scores 0.1, 0.2, ..."""
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for image_id in ids:
        classes = read_mask(coco_mini / "SegmentationClass" / f"{image_id}.png")
        values = [v for v in np.unique(classes) if v != 0]
        if len(values) >= 4:
            break
    image = read_image(coco_mini / "JPEGImages" / f"{image_id}.jpg")
    masks = np.stack([classes == v for v in values])
    scores = np.linspace(0.1, 0.9, len(values)).astype(np.float32)
    return image_id, image, classes, Proposals(masks, scores)


def test_save_and_load_packed(real, tmp_path):
    image_id, image, _, proposals = real
    path = tmp_path / f"{image_id}.npz"
    save_proposals(path, proposals)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # atomic: no temporary left behind
    with np.load(path) as data:
        assert set(data.files) == {"packed", "shape", "scores"} and data["packed"].dtype == np.uint8
    proposer = ms.get_component("proposer", "precomputed", root=tmp_path)
    out = proposer.propose(image, image_id=image_id)
    np.testing.assert_array_equal(out.masks, proposals.masks)
    np.testing.assert_array_equal(out.scores, proposals.scores)
    empty = Proposals.empty(*image.shape[:2])
    save_proposals(tmp_path / "empty.npz", empty)
    assert len(proposer.propose(image, image_id="empty")) == 0


def test_unpacked_npz_with_and_without_scores(real, tmp_path):
    image_id, image, _, proposals = real
    np.savez(tmp_path / f"{image_id}.npz", masks=proposals.masks, scores=proposals.scores.astype(np.float64))
    np.savez(tmp_path / "noscores.npz", masks=proposals.masks.astype(np.uint8))
    proposer = ms.get_component("proposer", "precomputed", root=tmp_path)
    out = proposer.propose(image, image_id=image_id)
    np.testing.assert_array_equal(out.masks, proposals.masks)
    assert out.scores.dtype == np.float32
    np.testing.assert_allclose(out.scores, proposals.scores)
    plain = proposer.propose(image, image_id="noscores")
    assert plain.masks.dtype == np.bool_ and np.all(plain.scores == 1.0)
    np.testing.assert_array_equal(plain.masks, proposals.masks)


def test_png_instance_map(real, tmp_path):
    image_id, image, classes, proposals = real
    Image.fromarray(classes.astype(np.uint8), mode="L").save(tmp_path / f"{image_id}.png")
    out = ms.get_component("proposer", "precomputed", root=tmp_path).propose(image, image_id=image_id)
    np.testing.assert_array_equal(out.masks, proposals.masks)  # ascending value order, 0 = no mask
    assert np.all(out.scores == 1.0) and out.scores.dtype == np.float32


def test_score_threshold(real, tmp_path):
    image_id, image, _, proposals = real
    save_proposals(tmp_path / f"{image_id}.npz", proposals)
    proposer = ms.get_component("proposer", "precomputed", root=tmp_path, score_threshold=0.5)
    out = proposer.propose(image, image_id=image_id)
    keep = proposals.scores >= 0.5
    assert 0 < len(out) < len(proposals)
    np.testing.assert_array_equal(out.masks, proposals.masks[keep])
    assert np.all(out.scores >= 0.5)
    none = ms.get_component("proposer", "precomputed", root=tmp_path, score_threshold=2.0)
    assert len(none.propose(image, image_id=image_id)) == 0


def test_errors(real, tmp_path):
    image_id, image, _, proposals = real
    with pytest.raises(ms.ModusegError, match=rf"root {tmp_path / 'nope'} does not exist"):
        ms.get_component("proposer", "precomputed", root=tmp_path / "nope")
    proposer = ms.get_component("proposer", "precomputed", root=tmp_path)
    with pytest.raises(ms.ModusegError, match=r"needs the image id"):
        proposer.propose(image)
    missing = rf"proposal file {tmp_path / image_id}\.npz \(or {image_id}\.png\) does not exist"
    with pytest.raises(ms.ModusegError, match=missing):
        proposer.propose(image, image_id=image_id)
    save_proposals(tmp_path / f"{image_id}.npz", proposals)
    with pytest.raises(ms.ModusegError, match=rf"{tmp_path / image_id}\.npz has masks of \d+×\d+ but the image is"):
        proposer.propose(image[:-5], image_id=image_id)
    np.savez(tmp_path / "short.npz", masks=proposals.masks, scores=proposals.scores[:-1])
    n = len(proposals)
    with pytest.raises(ms.ModusegError, match=rf"short\.npz has {n - 1} scores for {n} masks"):
        proposer.propose(image, image_id="short")
    np.savez(tmp_path / "wrong.npz", segments=proposals.masks)
    with pytest.raises(ms.ModusegError, match=r"wrong\.npz holds \['segments'\]; expected 'masks'"):
        proposer.propose(image, image_id="wrong")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    with pytest.raises(ms.ModusegError, match=r"corrupt\.npz is unreadable or corrupt"):
        load_proposals(tmp_path / "corrupt.npz")
    with pytest.raises(ms.ModusegError, match=r"must end in \.npz"):
        save_proposals(tmp_path / "x.npy", proposals)

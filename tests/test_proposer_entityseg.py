"""``entityseg``: the paper's proposer through detectron2's predictor call interface.

detectron2 and CropFormer are not on PyPI, so the plugin is driven here by a stand-in predictor
module (tests/entityseg_standin.py) that follows the documented interface — a callable taking a
BGR uint8 image and returning {"instances": ... with pred_masks and scores} — on real coco-mini
photos. Without detectron2 installed, the plugin must say exactly what to install."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from moduseg_core import ModusegError, get_component
from moduseg_core.cli import main
from moduseg_core.contract.options import parse_options
from moduseg_core.contract.plugins import get_spec
from moduseg_core.files.io import read_image

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
STANDIN = "entityseg_standin:make_predictor"


@pytest.fixture(autouse=True)
def _env(only_plugins, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # makes entityseg_standin importable
    only_plugins("proposers")


@pytest.fixture(scope="module")
def images(coco_mini) -> list[np.ndarray]:
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]
    return [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids]


def build(**values):
    """The registered factory with parsed options (detectron2's presence is what get_component checks first)."""
    spec = get_spec("proposer", "entityseg")
    return spec.factory(parse_options("proposer", "entityseg", spec.options, values))


def expected_masks(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in returns when it is handed the BGR version of ``rgb``, best score first."""
    import entityseg_standin

    masks = []
    for channel in (2, 1, 0):  # B, G, R of an RGB image
        bright = rgb[:, :, channel] > 127
        masks += [bright, ~bright]
    return np.stack(masks), np.array(entityseg_standin.SCORES, np.float32)


def test_masks_through_the_predictor_interface(images):
    import entityseg_standin

    entityseg_standin.BUILT.clear()
    proposer = build(predictor=STANDIN)
    for image in images:
        proposals = proposer.propose(image)
        masks, scores = expected_masks(image)
        keep = scores >= 0.6  # the paper's threshold, the default
        assert proposals.masks.dtype == np.bool_ and proposals.masks.shape == (int(keep.sum()), *image.shape[:2])
        assert proposals.scores.dtype == np.float32 and np.all(np.diff(proposals.scores) <= 0)
        np.testing.assert_array_equal(proposals.scores, scores[keep])
        np.testing.assert_array_equal(proposals.masks, masks[keep])  # so the predictor was handed BGR
    # built once, reused for every image
    assert len(entityseg_standin.BUILT) == 1 and entityseg_standin.BUILT[0].calls == len(images)
    assert entityseg_standin.BUILT[0].options.score_threshold == 0.6


def test_score_threshold(images):
    image = images[0]
    _, scores = expected_masks(image)
    for threshold in (0.0, 0.5, 0.9, 1.0):
        proposals = build(predictor=STANDIN, score_threshold=threshold).propose(image)
        assert len(proposals) == int((scores >= threshold).sum())
        assert np.all(proposals.scores >= threshold)


def test_broken_predictors_are_named_in_one_line(images):
    for factory, text in [
        ("entityseg_standin:make_wrong_size", "returned masks of shape"),
        ("entityseg_standin:make_no_instances", "without 'instances'"),
    ]:
        proposer = build(predictor=factory)
        with pytest.raises(ModusegError) as info:
            proposer.propose(images[0])
        assert text in str(info.value) and "\n" not in str(info.value)
    for spec, text in [
        ("entityseg_standin:not_a_factory", "has no callable 'not_a_factory'"),
        ("no_such_module_here:make", "cannot import 'no_such_module_here'"),
    ]:
        with pytest.raises(ModusegError, match=text):
            build(predictor=spec)


def test_option_errors_are_one_line():
    for values, text in [
        ({"opts": ["INPUT.MIN_SIZE_TEST"]}, "KEY VALUE pairs"),
        ({"predictor": "no-colon"}, "package.module:factory"),
        ({"score_threshold": 2}, "score_threshold"),
        ({"predictor_type": "maskrcnn"}, "predictor_type"),
    ]:
        with pytest.raises(ModusegError) as info:
            build(**values)
        assert text in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(HAS_DETECTRON2, reason="checks the messages shown where detectron2 is not installed")
def test_without_detectron2_it_says_exactly_what_to_install(capsys):
    spec = get_spec("proposer", "entityseg")
    assert not spec.importable and spec.missing_requirements() == ["detectron2"]
    with pytest.raises(ModusegError, match="needs detectron2"):
        get_component("proposer", "entityseg", weights="Mask2Former_hornet_3x_576d0b.pth")
    with pytest.raises(ModusegError) as info:
        build(weights="Mask2Former_hornet_3x_576d0b.pth")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'" in message
    assert (
        "https://github.com/qqlu/Entity" in message and "cropformer_root" in message and "docs/proposers.md" in message
    )
    # and `moduseg plugins list` shows it as not importable, with the reason
    assert main(["plugins", "list", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "entityseg")
    assert row["importable"] is False and row["missing"] == ["detectron2"]
    assert "docs/proposers.md" in row["summary"]

"""The ``clip`` labeler with open_clip's real model classes, random-initialised from a small config
and loaded from a local folder laid out as the hub lays it out (``local-dir:``).

Random weights make the maps meaningless, so these tests check the invariants that hold for any
weights: only background and the image's own labels come out, sliding windows cover every pixel,
map correction makes every proposal one class, and every user error is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")

import torch
from conftest import plugins_only
from contract_builders import CLIP_LABELER_CFG, save_clip_labeler

import moduseg_core as ms
from moduseg_core import plugins
from moduseg_core.contract.types import Sample
from moduseg_core.files.io import read_image

PLUGINS = "datasets,labelers,proposers"
TINY = CLIP_LABELER_CFG
FAST = {"templates": ["a photo of a {}."], "crop": 64, "stride": 32, "short_side": 96}


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A random-initialised open_clip.CLIP saved as open_clip_config.json + open_clip_pytorch_model.bin."""
    return save_clip_labeler(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def samples(coco_mini):
    import moduseg_builtins.datasets  # noqa: F401  (the dataset plugin module, light)

    with plugins_only("datasets"):
        ds = ms.get_component(
            "dataset", "voc", root=coco_mini, mask_dir="SegmentationClassVOC", labels_file="image_labels_voc.json"
        )
        items = list(ds)
    several = [s for s in items if len(s.labels) >= 3][:2]
    single = [s for s in items if len(s.labels) == 1][:1]
    empty = [s for s in items if not s.labels][:1]
    assert several and single and empty
    return several + single + empty


def make(tiny_clip, **options):
    return ms.get_component("labeler", "clip", model=f"local-dir:{tiny_clip}", **{**FAST, **options})


def test_text_data_is_the_papers():
    from moduseg_builtins.labelers._clip_text import IMAGENET_TEMPLATES, STUFF_WORDS

    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    method = (Path(__file__).resolve().parents[1].parent / "shared" / "METHOD.md")
    if method.is_file():  # the contract lists the stuff words; the defaults must be that list
        text = " ".join(method.read_text().split())
        listed = text.split("the stuff words `")[1].split("`")[0]
        assert tuple(w.strip() for w in listed.split(";")) == STUFF_WORDS
    spec = plugins.get_spec("labeler", "clip")
    defaults = spec.options()
    assert (defaults.model, defaults.pretrained, defaults.logit_scale) == ("ViT-B-16", "metaclip_fullcc", 40.0)
    assert (defaults.crop, defaults.stride) == (336, 112) and tuple(defaults.background) == STUFF_WORDS
    assert not spec.oracle and spec.extra == "clip"


@pytest.mark.parametrize("length", [1, 63, 64, 65, 100, 337, 448, 500, 1000])
@pytest.mark.parametrize("crop,stride", [(64, 32), (64, 64), (64, 7), (336, 112)])
def test_window_starts_cover_every_pixel(length, crop, stride):
    from moduseg_builtins.labelers._clip_impl import window_starts

    starts = window_starts(length, crop, stride)
    covered = np.zeros(max(length, crop), int)
    for start in starts:
        assert 0 <= start and (start + crop <= length or length <= crop)
        covered[start : start + crop] += 1
    assert covered[:length].min() >= 1
    assert starts == sorted(set(starts))
    if length > crop:
        assert starts[-1] == length - crop and np.all(np.diff(starts) <= stride)


@pytest.mark.slow
@pytest.mark.parametrize("dense", ["sclip", "clearclip", "maskclip"])
def test_only_background_and_image_labels_come_out(tiny_clip, samples, dense):
    labeler = make(tiny_clip, dense=dense)
    assert labeler.oracle is False
    seen = set()
    for sample in samples:
        image = read_image(sample.image_path)
        classes = labeler.label(image, sample)
        assert classes.dtype == np.int32 and classes.shape == image.shape[:2]
        found = set(np.unique(classes).tolist())
        assert found <= {0, *sample.labels}, (sample.id, found, sample.labels)
        seen |= found - {0}
        # a sample that claims one label of the image gets at most that label
        if sample.labels:
            narrowed = Sample(sample.id, sample.image_path, sample.labels[-1:], sample.mask_path)
            assert set(np.unique(labeler.label(image, narrowed)).tolist()) <= {0, sample.labels[-1]}
        else:
            assert found == {0}
    assert seen, "random weights still produce some foreground on real images"


@pytest.mark.parametrize("short_side,crop,stride", [(None, 64, 48), (96, 64, 32), (40, 64, 16), (150, 96, 96)])
def test_windows_cover_every_pixel_of_real_images(tiny_clip, samples, short_side, crop, stride):
    labeler = make(tiny_clip, short_side=short_side, crop=crop, stride=stride)
    image = read_image(samples[0].image_path)[:200, :301]
    logits, count = labeler.logits(image, samples[0].labels)
    assert logits.shape == (1 + len(samples[0].labels), 200, 301)
    assert np.isfinite(logits).all()
    assert count.min() >= 1
    expected = (200, 301) if short_side is None else (short_side, round(301 * short_side / 200))
    assert count.shape == expected


@pytest.mark.slow
def test_map_correction_makes_every_proposal_one_class(tiny_clip, samples):
    plain = make(tiny_clip)
    corrected = make(tiny_clip, correct_with="slic", correct_options={"n_segments": [40]})
    slic = ms.get_component("proposer", "slic", n_segments=[40])
    sample = samples[0]
    image = read_image(sample.image_path)
    before, after = plain.label(image, sample), corrected.label(image, sample)
    assert set(np.unique(after).tolist()) <= {0, *sample.labels}
    for mask in slic.propose(image).masks:
        values, counts = np.unique(before[mask], return_counts=True)
        assert np.unique(after[mask]).tolist() == [values[counts.argmax()]]
    ignoring = make(tiny_clip, correct_with="slic", correct_options={"n_segments": [40]}, correct_min_score=1.5)
    np.testing.assert_array_equal(ignoring.label(image, sample), before)


def test_majority_correct_rules():
    from moduseg_builtins.labelers._common import majority_correct

    classes = np.array([[1, 1, 2, 2], [1, 255, 2, 0]], np.int32)
    big = np.ones((2, 4), bool)
    small = np.zeros((2, 4), bool)
    small[:, 2:] = True
    only_ignore = np.zeros((2, 4), bool)
    only_ignore[1, 1] = True
    proposals = ms.Proposals(np.stack([small, big, only_ignore]), np.array([0.9, 0.9, 0.9], np.float32))
    out = majority_correct(classes, proposals, 0.5)
    # big first (majority 1 of 7 non-ignore pixels: three 1s vs three 2s -> tie to the smaller id),
    # then small (majority 2 in the uncorrected map) overrides its half; ignore-only changes nothing
    np.testing.assert_array_equal(out, [[1, 1, 2, 2], [1, 1, 2, 2]])
    low = ms.Proposals(np.stack([big]), np.array([0.4], np.float32))
    np.testing.assert_array_equal(majority_correct(classes, low, 0.5), classes)


def _one_line_error(**options) -> str:
    with pytest.raises(ms.ModusegError) as info:
        ms.get_component("labeler", "clip", **options)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_errors_are_one_line(tiny_clip, samples, tmp_path):
    assert "not an open_clip architecture; did you mean 'ViT-B-16'?" in _one_line_error(model="ViT-B-61")
    text = _one_line_error(model="ViT-B-16", pretrained="metaclip_fulcc")
    assert "neither a tag of ViT-B-16" in text and "metaclip_fullcc" in text
    assert "that folder does not exist" in _one_line_error(model=f"local-dir:{tmp_path / 'nothing'}")
    assert "stride=200 exceeds crop=100" in _one_line_error(model=f"local-dir:{tiny_clip}", crop=100, stride=200)
    text = _one_line_error(model=f"local-dir:{tiny_clip}", crop=100, stride=50, templates=["x"])
    assert "exactly one {}" in text
    text = _one_line_error(model=f"local-dir:{tiny_clip}", crop=100, stride=50, templates=["a {}."])
    assert "crop=100 is not a multiple of the model's patch size 16" in text
    text = _one_line_error(model=f"local-dir:{tiny_clip}", names={"tvmonitr": ["screen"]}, **FAST)
    assert "did you mean 'tvmonitor'?" in text
    text = _one_line_error(model=f"local-dir:{tiny_clip}", correct_with="slik", **FAST)
    assert "correct_with='slik' is not a registered proposer" in text
    labeler = make(tiny_clip)
    image = read_image(samples[0].image_path)
    with pytest.raises(ms.ModusegError, match=r"has label 21, but its classes \('voc'\) allow 1..20"):
        labeler.label(image, Sample("x", samples[0].image_path, (3, 21)))


def test_architecture_name_with_a_checkpoint_file(tmp_path, samples):
    """``model`` = an open_clip architecture name and ``pretrained`` = a checkpoint file (a saved random init
    of a small architecture registered with open_clip.add_model_config); other towers are refused."""
    import open_clip

    (tmp_path / "moduseg-tiny-vit.json").write_text(json.dumps(TINY))
    resnet = {**TINY, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16}}
    (tmp_path / "moduseg-tiny-rn.json").write_text(json.dumps(resnet))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(1)
    path = tmp_path / "tiny-vit.pt"
    torch.save(open_clip.create_model("moduseg-tiny-vit").state_dict(), path)
    labeler = ms.get_component("labeler", "clip", model="moduseg-tiny-vit", pretrained=str(path), **FAST)
    sample = samples[0]
    image = read_image(sample.image_path)
    assert set(np.unique(labeler.label(image, sample)).tolist()) <= {0, *sample.labels}
    random_init = ms.get_component("labeler", "clip", model="moduseg-tiny-vit", pretrained=None, **FAST)
    assert not torch.equal(random_init.text, labeler.text)  # the file's weights were loaded
    text = _one_line_error(model="moduseg-tiny-rn", pretrained=None, **FAST)
    assert "has a ModifiedResNet vision tower" in text

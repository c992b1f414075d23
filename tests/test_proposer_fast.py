"""``engine=fast`` of the ``sam`` and ``sam2`` proposers against the libraries' own generators: the real
segment-anything and sam2 model classes (small random-initialised configs, one model shared by both engines)
on real coco-mini photos must give the same masks and the same scores."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("sam2")

import torch
from conftest import plugins_only, val_photos
from moduseg_builtins.proposers._sam2_impl import Sam2Proposer, build_model
from moduseg_builtins.proposers._sam_impl import SamProposer
from test_proposer_sam import tiny_sam

from moduseg_core.contract.plugins import build_options

pytestmark = pytest.mark.slow

#: what the engines are compared under: every candidate kept (no NMS either), with the box NMS, each threshold
#: set where it splits these random models' candidates (about their median; stability with a small offset,
#: as random logits sit near 0), and the library defaults (random weights: nothing passes them)
SETTINGS = {
    "everything": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0},
    "nms": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
    "iou": {"pred_iou_thresh": {"sam": 0.17, "sam2": 0.506}, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0},
    "stability": {"pred_iou_thresh": 0.0, "stability_score_thresh": {"sam": 0.017, "sam2": 0.7},
                  "stability_score_offset": 0.02, "box_nms_thresh": 1.0},
    "defaults": {},
}


def setting(name: str, key: str) -> dict:
    return {k: (v[name] if isinstance(v, dict) else v) for k, v in SETTINGS[key].items()}


@pytest.fixture(scope="module", autouse=True)
def _env():
    with plugins_only("proposers"):
        yield


@pytest.fixture(scope="module")
def images(coco_mini) -> list[np.ndarray]:
    return val_photos(coco_mini, 2, 2)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"sam": tiny_sam(), "sam2": build_model("configs/sam2.1/sam2.1_hiera_t.yaml", 256)}


def make(models, name: str, engine: str, **values):
    options = build_options("proposer", name, {"points_per_side": 8, "points_per_batch": 16, "device": "cpu",
                                               "engine": engine, **values})
    cls = SamProposer if name == "sam" else Sam2Proposer
    return cls(options, model=models[name])


@pytest.mark.parametrize("key", list(SETTINGS))
@pytest.mark.parametrize("name", ["sam", "sam2"])
def test_fast_gives_the_librarys_masks_and_scores(models, images, name, key):
    """engine=fast with its defaults (the library's decoder, one image per encoder call): bit for bit."""
    library = make(models, name, "library", **setting(name, key))
    fast = make(models, name, "fast", **setting(name, key))
    assert (fast.options.fast_decoder, fast.options.batch_size) == ("library", 1)
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert got.masks.shape == want.masks.shape
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)
        if key == "everything":  # 8×8 points × 3 candidates, none dropped
            assert len(want) == 192
        if key in ("iou", "stability"):  # the threshold drops some candidates and keeps others
            assert 0 < len(want) < 192


@pytest.mark.parametrize("key", list(SETTINGS))
@pytest.mark.parametrize("name", ["sam", "sam2"])
def test_the_factored_decoder_agrees_with_the_library(models, images, name, key):
    """``fast_decoder=factored``: the same candidates pass every threshold, scores within float32 rounding, and a
    few pixels at most flip at the mask threshold."""
    library = make(models, name, "library", **setting(name, key))
    fast = make(models, name, "fast", fast_decoder="factored", **setting(name, key))
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert len(got) == len(want)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
        flipped = np.count_nonzero(got.masks != want.masks)
        print(f"{name} {key}: {len(want)} masks, {flipped} of {want.masks.size} mask pixels differ")
        assert flipped <= 1e-5 * want.masks.size


def test_bfloat16_fast_equals_the_library_in_bfloat16(models, images):
    values = {**setting("sam2", "everything"), "dtype": "bfloat16"}
    library = make(models, "sam2", "library", **values)
    fast = make(models, "sam2", "fast", fast_decoder="library", **values)
    full = make(models, "sam2", "fast", fast_decoder="library", **setting("sam2", "everything"))
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)
        # against float32: the same candidates; per pixel the number of masks covering it moves by a small
        # fraction of the masks (random logits sit near the threshold, where bfloat16's rounding flips them)
        reference = full.propose(image)
        assert len(reference) == len(got)
        moved = np.abs(reference.masks.sum(0).astype(int) - got.masks.sum(0)).mean() / len(got)
        print(f"bfloat16 vs float32: {moved:.4%} of mask-pixel memberships differ")
        assert moved < 0.02


def test_the_factored_decoder_runs_in_bfloat16(models, images):
    """``fast_decoder=factored`` under bfloat16 autocast (its mixed-precision residual): every candidate kept, as
    the library's bfloat16 run, and mask-pixel memberships within bfloat16's own spread of the library's."""
    values = {**setting("sam2", "everything"), "dtype": "bfloat16"}
    library = make(models, "sam2", "library", **values)
    factored = make(models, "sam2", "fast", fast_decoder="factored", **values)
    for image in images:
        want, got = library.propose(image), factored.propose(image)
        assert len(got) == len(want) == 192
        moved = np.abs(want.masks.sum(0).astype(int) - got.masks.sum(0)).mean() / len(got)
        print(f"factored vs library, both bfloat16: {moved:.4%} of mask-pixel memberships differ")
        assert moved < 0.02


def test_a_larger_point_batch_agrees(models, images):
    """The whole grid in one decoder call: the decoder sums in other batches, so the result is the library's up
    to float rounding — the same number of masks, pixels equal up to a few flips at the threshold."""
    library = make(models, "sam2", "library", **setting("sam2", "everything"))
    fast = make(models, "sam2", "fast", points_per_batch=64, fast_decoder="library", **setting("sam2", "everything"))
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert len(want) == len(got)
        np.testing.assert_allclose(np.sort(got.scores), np.sort(want.scores), atol=1e-5)
        assert np.count_nonzero(got.masks.sum(0) != want.masks.sum(0)) <= 1e-4 * want.masks[0].size


#: SAM 2's mask-to-mask refinement compared under: every candidate kept, and an IoU threshold about the median
#: of the refined candidates' predicted IoU (random weights: 0.510 to 0.541 on these photos)
M2M = {"everything": setting("sam2", "everything"), "iou": {**setting("sam2", "everything"), "pred_iou_thresh": 0.525}}


@pytest.mark.parametrize("key", list(M2M))
def test_mask_to_mask_refinement_gives_the_librarys_masks_and_scores(models, images, key):
    """``use_m2m=true``: every candidate re-decoded with its own low-resolution logits as the mask input, then
    filtered by the refined IoU: the library's masks and scores, identical (fast_decoder=library)."""
    library = make(models, "sam2", "library", use_m2m=True, **M2M[key])
    fast = make(models, "sam2", "fast", use_m2m=True, fast_decoder="library", **M2M[key])
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        print(f"sam2 use_m2m {key}: {len(want)} of 192 masks")
        assert got.masks.shape == want.masks.shape
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)
        if key == "everything":
            assert len(want) == 192
        else:  # the refined IoU threshold drops some candidates and keeps others
            assert 0 < len(want) < 192


def test_options_that_give_the_librarys_masks_share_one_identity():
    """The proposal cache and bank fingerprints key on ``identity()``: engine=library and engine=fast with the
    library's decoder compute the same masks, so they are one entry; the factored decoder is another."""
    def identity(name, **values):
        return build_options("proposer", name, values).identity()

    for name in ("sam", "sam2"):
        default = identity(name)
        assert default == identity(name, engine="library") == identity(name, engine="library", fast_decoder="factored")
        assert default == identity(name, engine="fast", batch_size=4) and "engine" not in default
        factored = identity(name, fast_decoder="factored")
        assert factored != default and (factored["engine"], factored["fast_decoder"]) == ("fast", "factored")


def test_mask_to_mask_refinement_on_the_factored_decoder_agrees(models, images):
    """``use_m2m=true`` after the factored first decoding: the same candidates, scores within float32 rounding, a
    few pixels at most flip at the mask threshold."""
    library = make(models, "sam2", "library", use_m2m=True, **M2M["everything"])
    fast = make(models, "sam2", "fast", use_m2m=True, fast_decoder="factored", **M2M["everything"])
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert len(got) == len(want) == 192
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
        flipped = np.count_nonzero(got.masks != want.masks)
        print(f"sam2 use_m2m: {len(want)} masks, {flipped} of {want.masks.size} mask pixels differ")
        assert flipped <= 1e-5 * want.masks.size


@pytest.mark.parametrize("name", ["sam", "sam2"])
def test_several_images_per_encoder_call(models, images, name):
    """``propose_batch``: three photos (two sizes), two per image-encoder call. Batch size 1 is each image's own
    call exactly; two per call is the same up to float rounding in the encoder (same masks, scores within 1e-5,
    pixels equal up to a few flips at the threshold). engine=library proposes image by image."""
    photos = [images[0], images[1], images[0][:, ::-1].copy()]
    values = setting(name, "everything")
    alone = make(models, name, "fast", fast_decoder="library", **values)
    want = [alone.propose(image) for image in photos]
    one = make(models, name, "fast", fast_decoder="library", batch_size=1, **values).propose_batch(photos)
    for w, g in zip(want, one, strict=True):
        assert np.array_equal(g.masks, w.masks) and np.array_equal(g.scores, w.scores)
    two = make(models, name, "fast", fast_decoder="library", batch_size=2, **values)
    two.fast.seconds = dict.fromkeys(two.fast.seconds, 0.0)
    got = two.propose_batch(photos)
    assert len(got) == 3 and all(s > 0 for s in two.fast.seconds.values())
    for w, g in zip(want, got, strict=True):
        assert len(g) == len(w) == 192
        np.testing.assert_allclose(g.scores, w.scores, rtol=0, atol=1e-5)
        assert np.count_nonzero(g.masks != w.masks) <= 1e-5 * w.masks.size
    library = make(models, name, "library", **values)
    for w, g in zip([library.propose(image) for image in photos[:2]], library.propose_batch(photos[:2]), strict=True):
        assert np.array_equal(g.masks, w.masks)


@pytest.mark.parametrize("name, m2m", [("sam", False), ("sam2", False), ("sam2", True)])
def test_crop_layers_and_small_regions_as_the_library(models, images, name, m2m):
    """One crop layer (the image + 4 overlapping crops: edge filter, NMS within and between crops, uncropping) and
    the small-region post-processing, with SAM 2's mask-to-mask refinement or without: the library's masks and
    scores, identical (fast_decoder=library)."""
    values = {**setting(name, "everything"), "points_per_side": 4, "crop_n_layers": 1,
              "crop_nms_thresh": {"sam": 0.9, "sam2": 1.0}[name],  # SAM 2's random masks: near-identical boxes
              "min_mask_region_area": 30, **({"use_m2m": True} if m2m else {})}
    library = make(models, name, "library", **values)
    fast = make(models, name, "fast", fast_decoder="library", **values)
    for image in images:
        want, got = library.propose(image), fast.propose(image)
        assert len(want) > 1
        print(f"{name} use_m2m={m2m}: {len(want)} masks")
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.scores, want.scores)

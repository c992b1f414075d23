"""``eomt`` and ``mask2former``: transformers' real model classes, random-initialised from tiny configs,
saved with save_pretrained to folders laid out as the hub's and loaded through the plugin by path,
on real coco-mini photos. Random weights give meaningless masks: invariants are asserted, not quality."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch
import torch.nn.functional as F
from conftest import plugins_only
from contract_builders import save_eomt, save_mask2former

from moduseg_core import ModusegError, get_component
from moduseg_core.files.io import read_image

pytestmark = pytest.mark.slow

EOMT_SIZE = 160


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with plugins_only(
        "proposers",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path_factory.mktemp("hf-home")),  # an empty cache: nothing to find offline
    ):
        yield


@pytest.fixture(scope="module")
def images(coco_mini) -> list[np.ndarray]:
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids[:2]]


@pytest.fixture(scope="module")
def eomt_dir(tmp_path_factory):
    """A random EoMT in a folder laid out as the hub's (config.json, model.safetensors, preprocessor_config.json)."""
    return save_eomt(tmp_path_factory.mktemp("eomt-tiny"), EOMT_SIZE)


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory):
    """A random Mask2Former (Swin backbone) whose processor resizes to 128 (shorter side) / 200 (longer side)."""
    return save_mask2former(tmp_path_factory.mktemp("mask2former-tiny"))


@pytest.fixture(scope="module")
def dirs(eomt_dir, mask2former_dir):
    return {"eomt": eomt_dir, "mask2former": mask2former_dir}


def check_proposals(proposals, image, threshold):
    h, w = image.shape[:2]
    assert proposals.masks.dtype == np.bool_ and proposals.masks.shape[1:] == (h, w)
    assert proposals.scores.dtype == np.float32
    assert np.all(proposals.scores >= threshold) and np.all(proposals.scores <= 1.0)
    assert np.all(np.diff(proposals.scores) <= 0)  # sorted, best first
    assert proposals.masks.reshape(len(proposals), -1).any(axis=1).all()  # no empty mask


@pytest.mark.parametrize("name", ["eomt", "mask2former"])
def test_every_query_mask_on_real_images(dirs, images, name):
    proposer = get_component("proposer", name, model=str(dirs[name]), score_threshold=0.0)
    queries = proposer.model.config.num_queries
    for image in images:
        proposals = proposer.propose(image)
        check_proposals(proposals, image, 0.0)
        assert 0 < len(proposals) <= queries
    again = proposer.propose(images[0])
    first = proposer.propose(images[0])
    np.testing.assert_array_equal(again.masks, first.masks)
    np.testing.assert_array_equal(again.scores, first.scores)


@pytest.mark.parametrize("name", ["eomt", "mask2former"])
def test_score_is_class_probability_times_mean_mask_probability(dirs, images, name):
    """Recompute the documented score from the raw model outputs, query by query."""
    proposer = get_component("proposer", name, model=str(dirs[name]), score_threshold=0.0)
    image = images[1]
    h, w = image.shape[:2]
    pixels, resized, padded = proposer.prepare(image)
    with torch.no_grad():
        out = proposer.model(pixel_values=pixels)
    probs = out.class_queries_logits[0].softmax(-1)[:, :-1].max(-1).values.numpy()
    logits = F.interpolate(out.masks_queries_logits, size=padded, mode="bilinear", align_corners=False)
    logits = F.interpolate(logits[:, :, : resized[0], : resized[1]], size=(h, w), mode="bilinear", align_corners=False)
    mask_probs = logits[0].sigmoid().numpy()
    expected = []
    for q in range(len(probs)):
        inside = mask_probs[q] > 0.5
        if inside.any():
            expected.append((probs[q] * mask_probs[q][inside].mean(), inside))
    expected.sort(key=lambda item: -item[0])
    proposals = proposer.propose(image)
    assert len(proposals) == len(expected)
    np.testing.assert_allclose(proposals.scores, [s for s, _ in expected], rtol=1e-4, atol=1e-6)
    for mask, (_, want) in zip(proposals.masks, expected, strict=True):
        assert (mask != want).mean() < 1e-3  # equal up to pixels on the 0.5 boundary


@pytest.mark.parametrize("name", ["eomt", "mask2former"])
def test_score_threshold_keeps_exactly_the_masks_that_reach_it(dirs, images, name):
    everything = get_component("proposer", name, model=str(dirs[name]), score_threshold=0.0).propose(images[0])
    threshold = float(np.median(everything.scores))
    kept = get_component("proposer", name, model=str(dirs[name]), score_threshold=threshold).propose(images[0])
    check_proposals(kept, images[0], threshold)
    reach = everything.scores >= threshold
    assert 0 < len(kept) == int(reach.sum()) < len(everything)
    np.testing.assert_array_equal(kept.masks, everything.masks[reach])
    # the default is the paper's 0.6, which random weights (class probability ≈ 1/8) never reach
    default = get_component("proposer", name, model=str(dirs[name]))
    assert default.options.score_threshold == 0.6 and len(default.propose(images[0])) == 0


def test_eomt_preprocessing_matches_its_image_processor(eomt_dir, images):
    proposer = get_component("proposer", "eomt", model=str(eomt_dir))
    processor = transformers.EomtImageProcessor.from_pretrained(eomt_dir)
    for image in images:
        pixels, resized, padded = proposer.prepare(image)
        assert padded == (EOMT_SIZE, EOMT_SIZE) and max(resized) == EOMT_SIZE
        reference = processor(images=image.copy(), return_tensors="pt")["pixel_values"]
        assert reference.shape == pixels.shape
        np.testing.assert_allclose(pixels.numpy(), reference.numpy(), atol=0.05)


def test_mask2former_preprocessing_matches_its_image_processor(mask2former_dir, images):
    """Resize as the image processor does (without its rounding of the size up to a multiple of 32, which
    stretches the image); then pad with zeros to the multiple, as the original detectron2 Mask2Former does."""
    proposer = get_component("proposer", "mask2former", model=str(mask2former_dir))
    assert (proposer.shortest_edge, proposer.longest_edge, proposer.size_divisor) == (128, 200, 32)  # from the folder
    processor = transformers.Mask2FormerImageProcessor.from_pretrained(mask2former_dir, size_divisor=0)
    for image in images:
        pixels, resized, padded = proposer.prepare(image)
        assert padded == (-(-resized[0] // 32) * 32, -(-resized[1] // 32) * 32)
        reference = processor(images=image.copy(), return_tensors="pt")["pixel_values"]
        assert tuple(reference.shape[2:]) == resized
        np.testing.assert_allclose(pixels[:, :, : resized[0], : resized[1]].numpy(), reference.numpy(), atol=0.05)
        assert not pixels[:, :, resized[0] :].any() and not pixels[:, :, :, resized[1] :].any()
    # explicit sizes win over the checkpoint's
    bigger = get_component("proposer", "mask2former", model=str(mask2former_dir), shortest_edge=256, longest_edge=1000)
    _, resized, padded = bigger.prepare(images[0])
    assert min(resized) == 256 and padded[0] % 32 == 0 and padded[1] % 32 == 0


def test_bfloat16_runs_and_returns_bool_masks_float32_scores(eomt_dir, images):
    proposer = get_component("proposer", "eomt", model=str(eomt_dir), score_threshold=0.0, dtype="bfloat16")
    assert next(proposer.model.parameters()).dtype == torch.bfloat16
    check_proposals(proposer.propose(images[0]), images[0], 0.0)


def _one_line_error(**options) -> str:
    with pytest.raises(ModusegError) as info:
        get_component("proposer", options.pop("name"), **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loader_errors_are_one_line(eomt_dir, mask2former_dir, tmp_path):
    message = _one_line_error(name="eomt", model=str(tmp_path / "missing" / "dir"))
    assert "does not exist" in message and "save_pretrained" in message
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _one_line_error(name="mask2former", model=str(tmp_path / "empty"))
    message = _one_line_error(name="mask2former", model=str(eomt_dir))
    assert "'eomt' checkpoint" in message and "mask2former" in message
    message = _one_line_error(name="eomt", model=str(mask2former_dir))
    assert "'mask2former' checkpoint" in message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((eomt_dir / "config.json").read_text())  # the config without the weights
    assert "could not load the checkpoint directory" in _one_line_error(name="eomt", model=str(broken))
    # a hub id that is not in the (empty, offline) cache
    message = _one_line_error(name="eomt", model="tue-mps/coco_panoptic_eomt_large_640")
    assert "Hugging Face hub or its local cache" in message and "hf download" in message


def test_option_errors_are_one_line():
    assert "score_threshold" in _one_line_error(name="eomt", score_threshold=1.5)
    assert "mask_threshold" in _one_line_error(name="mask2former", mask_threshold=0.0)
    assert "device" in _one_line_error(name="eomt", device="gpu0")
    assert "shortest_edge" in _one_line_error(name="mask2former", shortest_edge=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_a_gpu(eomt_dir):
    message = _one_line_error(name="eomt", model=str(eomt_dir), device="cuda")
    assert "CUDA" in message and "device=auto" in message


def test_mask2former_bfloat16_runs_under_autocast_and_gives_finite_masks(tmp_path, images):
    """With its weights cast to bfloat16, Mask2Former's multi-scale deformable attention returns NaN once its
    features are 256 wide (the released models' width; found by the GPU check on Swin-L): bfloat16 runs under
    autocast with float32 weights. This model reproduces the NaN when its weights are cast."""
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=256, mask_feature_size=256, hidden_dim=256, encoder_layers=1,
        decoder_layers=1, num_queries=12, num_labels=9,
    )
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    transformers.Mask2FormerImageProcessor(size={"shortest_edge": 128, "longest_edge": 200}).save_pretrained(tmp_path)
    with torch.inference_mode():  # the failure this guards against
        cast = model.to(torch.bfloat16)(pixel_values=torch.zeros(1, 3, 128, 192, dtype=torch.bfloat16))
    assert not torch.isfinite(cast.masks_queries_logits).all()

    proposer = get_component("proposer", "mask2former", model=str(tmp_path), score_threshold=0.0, dtype="bfloat16")
    assert next(proposer.model.parameters()).dtype == torch.float32
    reference = get_component("proposer", "mask2former", model=str(tmp_path), score_threshold=0.0)
    for image in images[:2]:
        found = proposer.propose(image)
        check_proposals(found, image, 0.0)
        assert len(found) == len(reference.propose(image)) == 12  # every query kept at threshold 0


@pytest.fixture(scope="module")
def mixed_images(coco_mini) -> list[np.ndarray]:
    """Six val photos of several sizes (landscape, portrait), so Mask2Former forms more than one size group."""
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return [read_image(coco_mini / "JPEGImages" / f"{i}.jpg") for i in ids[:6]]


@pytest.mark.parametrize("name", ["eomt", "mask2former"])
def test_a_batch_gives_each_image_what_propose_gives(dirs, mixed_images, name):
    """Several images per forward pass (same padded input size; EoMT pads every image to one square) return
    per image the masks and scores of proposing it alone, up to float32 rounding: a batched matrix product
    sums in another order (mask logits within ~1e-6 here), which may flip a pixel whose mask probability sits
    on the threshold — measured 1 pixel of 4.4 million over six photos."""
    proposer = get_component("proposer", name, model=str(dirs[name]), score_threshold=0.0, batch_size=4)
    alone = [proposer.propose(image) for image in mixed_images]
    together = proposer.propose_batch(mixed_images, [None] * len(mixed_images))
    assert len(together) == len(mixed_images)
    groups = {proposer.padded_hw(proposer.resized_hw(*image.shape[:2])) for image in mixed_images}
    assert len(groups) == 1 if name == "eomt" else len(groups) > 1
    for a, b in zip(alone, together, strict=True):
        assert a.masks.shape == b.masks.shape and len(a) > 0
        assert np.count_nonzero(a.masks != b.masks) <= 1e-5 * a.masks.size
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_predictor_proposes_a_batch_in_one_call_and_predicts_the_same(dirs, mixed_images, coco_mini):
    """The pipeline hands a batch to propose_batch; its proposals are those of proposing image by image."""
    from moduseg_core.contract.components import Built
    from moduseg_core.contract.config import MethodConfig
    from moduseg_core.pipeline.inference import Predictor, propose_many

    proposer = get_component("proposer", "eomt", model=str(dirs["eomt"]), score_threshold=0.0, batch_size=3)
    calls = []
    original = proposer.propose_batch

    def counting(images, ids):
        calls.append(len(images))
        return original(images, ids)

    proposer.propose_batch = counting
    built = Built("proposer", "eomt", proposer.options, proposer)
    predictor = Predictor(bank=None, proposer=built, encoder=None, aggregator=None, method=MethodConfig())
    _, batched = predictor.propose_batch(mixed_images, [None] * len(mixed_images))
    assert calls == [len(mixed_images)]
    single = [predictor.propose(image, None) for image in mixed_images]
    for a, b in zip(single, batched, strict=True):  # up to float32 rounding at the threshold (see the test above)
        assert a.masks.shape == b.masks.shape and np.count_nonzero(a.masks != b.masks) <= 1e-5 * a.masks.size
    assert len(propose_many(proposer, mixed_images[:1], [None])) == 1

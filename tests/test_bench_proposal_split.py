"""`moduseg bench --engines`: the sam / sam2 proposal stage split into encoder, decoder and post-processing for
engine=library and engine=fast, on real (tiny, random-initialised) segment-anything and sam2 models and real
coco-mini photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moduseg_core.cli import main

PARTS = ("encoder", "decoder", "post-processing")


def check_split(split: dict, images: int, identical: bool = True) -> None:
    assert split["images"] == images and set(split["engines"]) == {"library", "fast"}
    for engine, row in split["engines"].items():
        seconds = row["seconds_per_image"]
        assert all(seconds[p] > 0 for p in PARTS), (engine, seconds)
        assert sum(seconds[p] for p in PARTS) == pytest.approx(seconds["total"], rel=1e-6)
    assert set(split["ratio_fast_over_library"]) == {*PARTS, "total"}
    agree = split["agreement"]
    assert set(agree) == {"identical_images", "identical", "pixels_differing", "max_score_difference"}
    if identical:
        assert agree["identical_images"] == f"{images}/{images}" and agree["identical"]
        assert agree["pixels_differing"] == 0.0 and agree["max_score_difference"] == 0.0
    else:  # engine=fast's factored decoder may differ from the library's by float rounding: reported, and small
        assert agree["identical_images"].endswith(f"/{images}") and 0.0 <= agree["pixels_differing"] < 0.01


def test_bench_refuses_an_unknown_engine(coco_mini, tmp_path, capsys):
    argv = ["bench", "--data", str(coco_mini), "--engines", "library,turbo", "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'library,turbo'" in err and "library, fast" in err and "--engines library,fast" in err


def test_bench_refuses_engines_for_a_proposer_without_them(coco_mini, tmp_path, capsys):
    argv = ["bench", "--data", str(coco_mini), "--engines", "library,fast", "--out", str(tmp_path / "b")]
    assert main(argv) == 2  # the default config's proposer is slic
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not 'slic'" in err and "--proposer sam2" in err


def test_engines_auto_means_both_for_sam_only():
    from moduseg_core.bench import parse_engines

    assert parse_engines("auto", "sam2") == ("library", "fast")
    assert parse_engines("auto", "slic") == ()
    assert parse_engines("none", "sam") == ()
    assert parse_engines("fast, library", "sam") == ("library", "fast")


@pytest.fixture(scope="module")
def photos(coco_mini) -> list[np.ndarray]:
    from conftest import val_photos

    return val_photos(coco_mini, 3, 2)


@pytest.mark.parametrize("decoder", ["factored", "library"])
def test_split_of_a_tiny_sam_on_both_engines(photos, decoder):
    """Both engines on one tiny real SAM; with engine=fast's ``fast_decoder=library`` (its default) masks and scores
    must be identical, with the factored decoder the agreement is reported."""
    pytest.importorskip("segment_anything")
    from conftest import plugins_only
    from moduseg_builtins.proposers._sam_impl import SamProposer
    from test_proposer_sam import tiny_sam

    from moduseg_core.bench.proposal_split import engine_proposers, split_propose
    from moduseg_core.contract.plugins import build_options

    values = {"points_per_side": 4, "points_per_batch": 8, "device": "cpu", "pred_iou_thresh": 0.0,
              "stability_score_thresh": 0.0, "engine": "library", "fast_decoder": decoder}
    with plugins_only("proposers"):
        library = SamProposer(build_options("proposer", "sam", values), model=tiny_sam())
        proposers = engine_proposers(library, ("library", "fast"))
        assert proposers["library"] is library and proposers["fast"].model is library.model
        split = split_propose(proposers, photos[1:], warmup=photos[:1])
    print(split["agreement"])
    check_split(split, 2, identical=decoder == "library")
    assert split["engines"]["library"]["masks_per_image"] > 0
    # the wrappers are gone afterwards: the shared model's modules carry no hooks, set_image is the class's
    assert "set_image" not in vars(library.generator.predictor)
    assert not library.model.mask_decoder._forward_hooks and not library.model.prompt_encoder._forward_pre_hooks


def test_split_of_sam2_with_mask_to_mask_refinement(photos):
    """SAM 2's ``use_m2m`` runs on both engines (the fast engine's refinement is the library's): identical masks
    and scores with ``fast_decoder=library``."""
    pytest.importorskip("sam2")
    from conftest import plugins_only
    from moduseg_builtins.proposers._sam2_impl import Sam2Proposer, build_model

    from moduseg_core.bench.proposal_split import engine_proposers, split_propose
    from moduseg_core.contract.plugins import build_options

    values = {"points_per_side": 2, "device": "cpu", "use_m2m": True, "pred_iou_thresh": 0.0,
              "stability_score_thresh": 0.0, "engine": "library"}
    with plugins_only("proposers"):
        library = Sam2Proposer(build_options("proposer", "sam2", values),
                               model=build_model("configs/sam2.1/sam2.1_hiera_t.yaml", 256))
        proposers = engine_proposers(library, ("library", "fast"))
        assert proposers["fast"].fast.m2m and proposers["fast"].options.use_m2m
        split = split_propose(proposers, photos[1:2])
    check_split(split, 1)
    assert split["engines"]["fast"]["masks_per_image"] > 0


@pytest.mark.slow
def test_bench_splits_the_sam2_proposal_stage(coco_mini, tmp_path, capsys):
    """``moduseg bench`` with a random-weight SAM 2.1 hiera-tiny: both engines, split, agreement, in JSON and text."""
    pytest.importorskip("sam2")
    out = tmp_path / "bench"
    argv = [
        "bench",
        "--data",
        str(coco_mini),
        "--images",
        "1",
        "--warmup",
        "1",
        "--bank-size",
        "500",
        "--floor-batch",
        "1",
        "--no-loop",
        "--proposer",
        "sam2",
        "--set",
        "proposer.model=random",
        "--set",
        "proposer.config=sam2.1_hiera_t",
        "--set",
        "proposer.image_size=256",
        "--set",
        "proposer.points_per_side=4",
        "--set",
        "proposer.pred_iou_thresh=0",
        "--set",
        "proposer.stability_score_thresh=0",
        "--set",
        "encoder.model=random:facebook/dinov2-small",
        "--set",
        "encoder.resize=224",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    check_split(report["proposal_split"], 1, identical=False)  # the default fast decoder: up to float rounding
    assert report["proposal_split"]["proposer"] == "sam2"
    assert "engine=library vs engine=fast" in printed and "| fast / library (time) |" in printed
    assert "Masks and scores identical on " in (out / "bench.md").read_text()

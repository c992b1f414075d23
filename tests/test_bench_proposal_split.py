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
    else:  # engine=fast's default decoder may differ from the library's by float rounding: reported, and small
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

    assert parse_engines("auto", "sam2") == (("library", "fast"), False)
    assert parse_engines("auto", "slic") == ((), False)
    assert parse_engines("none", "sam") == ((), True)
    assert parse_engines("fast, library", "sam") == (("library", "fast"), True)


@pytest.fixture(scope="module")
def photos(coco_mini) -> list[np.ndarray]:
    from conftest import val_photos

    return val_photos(coco_mini, 3, 2)


@pytest.mark.parametrize("decoder", [None, "library"])
def test_split_of_a_tiny_sam_on_both_engines(photos, decoder):
    """Both engines on one tiny real SAM; with engine=fast's ``fast_decoder=library`` (where the option exists)
    masks and scores must be identical, with its default decoder the agreement is reported."""
    pytest.importorskip("sam2")
    from conftest import plugins_only
    from moduseg_builtins.proposers._sam2_impl import Sam2Proposer, build_model
    from moduseg_core import ModusegError
    from moduseg_core.bench.proposal_split import engine_proposers, split_markdown
    from moduseg_core.plugins import build_options

    with plugins_only("proposers"):
        options = build_options("proposer", "sam2", {"points_per_side": 2, "device": "cpu", "use_m2m": True})
        library = Sam2Proposer(options, model=build_model("configs/sam2.1/sam2.1_hiera_t.yaml", 256))
        proposers, skipped = engine_proposers(library, ("library", "fast"), explicit=False)
        assert list(proposers) == ["library"] and "use_m2m=true" in skipped["fast"]
        with pytest.raises(ModusegError, match="engine=fast has no mask-to-mask refinement, not use_m2m=true"):
            engine_proposers(library, ("library", "fast"), explicit=True)
    split = {"proposer": "sam", "images": 1, "warmup": 0, "skipped": skipped,
             "engines": {"library": {"seconds_per_image": dict.fromkeys((*PARTS, "total"), 1.0), "masks_per_image": 0}}}
    assert any(line.startswith("engine=fast not run: ") for line in split_markdown(split))

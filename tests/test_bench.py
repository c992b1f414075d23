"""`moduseg bench` on real coco-mini images with real components (SLIC, offline DINOv2-S/14)."""

from __future__ import annotations

import json

import pytest

from moduseg_core.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("resize", ["null", "224"])
def test_bench_runs_both_sides_and_they_agree(coco_mini, tmp_path, capsys, resize):
    out = tmp_path / "bench"
    argv = [
        "bench", "--data", str(coco_mini), "--images", "2", "--warmup", "1", "--bank-size", "5000",
        "--floor-batch", "2", "--bank-images", "2", "--set", f"encoder.resize={resize}", "--out", str(out),
        "--max-masks", "60",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    # the released loop (cv2 INTER_AREA at native size) and the pipeline paint the same maps
    assert report["identical_maps"] == "2/2" and report["pixel_agreement"] == 1.0
    # --max-masks 60: SLIC gives ~130 masks here, both sides see the 60 best
    assert 10 < report["loop"]["masks_per_image"] == report["framework"]["masks_per_image"] <= 60
    for side in ("loop", "framework"):
        assert {"propose", "encode", "pool", "retrieve", "nms+paint"} <= set(report[side]["stages_s"])
        assert report[side]["images_per_s"] > 0
    assert report["speedup"] > 0 and report["speedup_pool_retrieve_nms"] > 0  # no timing ratio: a loaded machine
    floor = report["floor"]
    assert floor["flops_per_image"] > 1e9  # a ViT-S/14 on a few hundred patches: GFLOPs
    assert 0 < floor["fraction_of_floor"] and floor["matmul_flops_per_s"] > 0
    assert report["bank_build"]["images"] == 2 and report["bank_build"]["projected_min"] > 0
    assert "| **end to end** |" in printed and "of the floor" in printed
    assert (out / "bench.md").read_text().startswith("# moduseg bench")


def test_bench_refuses_a_split_too_small(coco_mini, tmp_path, capsys):
    argv = [
        "bench",
        "--data",
        str(coco_mini),
        "--set",
        "eval_limit=1",
        "--images",
        "1",
        "--warmup",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bench needs at least 2" in err and len(err.strip().splitlines()) == 1


def test_bench_with_random_weight_foundation_architectures(coco_mini, tmp_path):
    """The documented GPU recipe, shrunk for a CPU: sam2 and DINOv2 built from their
    architectures with random weights (no download), device=auto everywhere."""
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
        "2000",
        "--floor-batch",
        "2",
        "--max-masks",
        "100",
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
        "--set",
        "aggregator.device=auto",
        "--set",
        "index.device=auto",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["components"]["proposer"]["name"] == "sam2" and report["max_masks"] == 100
    assert report["identical_maps"] == "1/1"
    assert report["floor"]["flops_per_image"] > 1e9


def test_the_flop_count_runs_the_encoder_eagerly_through_its_public_hook():
    """A compiled graph bypasses torch's FLOP counter: the bench counts inside the encoder's ``eager()``."""
    import contextlib

    import numpy as np

    torch = pytest.importorskip("torch")
    from moduseg_core.bench import encoder_flops
    from moduseg_core.contract.components import Built

    class Compiled:
        eager_now = False

        @contextlib.contextmanager
        def eager(self):
            self.eager_now = True
            try:
                yield self
            finally:
                self.eager_now = False

        def encode(self, image):
            if self.eager_now:  # "compiled" otherwise: invisible to the counter
                torch.ones(4, 8) @ torch.ones(8, 2)

    encoder = Compiled()
    assert encoder_flops(Built("encoder", "fake", None, encoder), np.zeros((2, 2, 3), np.uint8)) == 2 * 4 * 8 * 2
    assert not encoder.eager_now

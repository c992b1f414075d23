"""``method.miou_average``: METHOD.md's mean (classes with a non-empty union, the default) and the
released code's (every class, an empty union counting as 0); classes a dataset does not score;
every report says which mean it used and prints both when they differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.contract.config import MethodConfig
from moduseg_core.method.metrics import miou_note, scores

METHOD = Path(__file__).resolve().parents[2] / "shared" / "METHOD.md"


def test_default_is_methods_mean_over_classes_with_a_non_empty_union():
    if not METHOD.is_file():
        pytest.skip(f"{METHOD} not found")
    assert "mIoU = mean over classes with a\nnon-empty union" in METHOD.read_text()
    assert MethodConfig().miou_average == "present"


def test_present_and_all_differ_only_when_a_class_is_absent():
    # classes 0, 1 occur; class 2 never (empty union); one pixel of 1 predicted as 0
    matrix = np.array([[5, 0, 0], [1, 3, 0], [0, 0, 0]])
    iou0, iou1 = 5 / 6, 3 / 4
    present = scores(matrix)
    assert present.average == "present" and np.isnan(present.iou[2])
    assert present.miou == pytest.approx((iou0 + iou1) / 2)
    every = scores(matrix, average="all")
    assert every.miou == pytest.approx((iou0 + iou1 + 0) / 3)
    assert every.miou_present == present.miou and present.miou_all == every.miou
    full = np.array([[5, 1], [1, 3]])  # every class occurs: the two means agree
    assert scores(full).miou == scores(full, average="all").miou
    with pytest.raises(ValueError, match="miou average 'mean'"):
        scores(matrix, average="mean")


def test_not_scored_class_is_in_neither_mean_but_its_pixels_count():
    # class 0 never in the ground truth (a dataset without background): 2 pixels of 1 left as 0
    matrix = np.array([[0, 0, 0], [2, 6, 0], [0, 0, 4]])
    result = scores(matrix, not_scored=(0,))
    assert np.isnan(result.iou[0]) and result.iou[1] == pytest.approx(6 / 8)
    assert result.miou == pytest.approx((6 / 8 + 1) / 2) == result.miou_all
    assert result.as_dict(["background", "a", "b"])["not_scored"] == ["background"]
    unscored = scores(matrix)  # scored as a class, it would count as a 0 in the mean
    assert unscored.miou == pytest.approx((0 + 6 / 8 + 1) / 3)


def test_miou_note_names_the_mean_and_shows_the_other_when_it_differs():
    assert miou_note({"miou": 0.5, "miou_average": "present", "miou_present": 0.5, "miou_all": 0.5}) == (
        "mean over present classes"
    )
    assert miou_note({"miou": 0.25, "miou_average": "all", "miou_present": 0.5, "miou_all": 0.25}) == (
        "mean over all classes; over present classes 50.00"
    )


def test_evaluate_on_a_subset_reports_the_chosen_mean_and_both(coco_mini, tmp_path, capsys):
    """Perfect predictions of three coco-mini images: every present class scores 1, the other VOC
    classes have an empty union; ``all`` counts them as 0."""
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:3]
    preds = tmp_path / "predictions"
    preds.mkdir()
    for i in ids:
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", preds)
    common = [
        "--dataset",
        "voc",
        "--set",
        f"dataset.root={coco_mini}",
        "--set",
        "dataset.mask_dir=SegmentationClassVOC",
        "--set",
        "dataset.labels_file=image_labels_voc.json",
        "--set",
        "eval_limit=3",
        "--split",
        "val",
    ]
    assert main(["evaluate", str(preds), *common, "--out", str(tmp_path / "present")]) == 0
    assert "mIoU 100.00 on 3 images (mean over present classes; over all classes " in capsys.readouterr().out
    assert (
        main(["evaluate", str(preds), *common, "--set", "method.miou_average=all", "--out", str(tmp_path / "all")]) == 0
    )
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    present = sum(v is not None for v in report["per_class_iou"].values())
    assert report["miou_average"] == "all" and report["miou_present"] == 1.0
    assert report["miou"] == pytest.approx(present / 21) and present < 21
    assert f"mIoU {100 * present / 21:.2f} on 3 images (mean over all classes; over present classes 100.00)" in printed
    assert main(["evaluate", str(preds), *common, "--set", "method.miou_average=mean"]) == 2
    assert "miou_average" in capsys.readouterr().err

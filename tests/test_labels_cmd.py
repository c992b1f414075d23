"""`moduseg evaluate-labels` on real coco-mini masks: scores, the ORACLE note, ignore pixels, files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.files.io import read_mask, write_png

PLUGINS = "datasets,labelers"


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS, MODUSEG_PROGRESS="0")


def _dataset(coco_mini) -> list[str]:
    return [
        "--dataset", "voc",
        "--set", f"dataset.root={coco_mini}",
        "--set", "dataset.mask_dir=SegmentationClassVOC",
        "--set", "dataset.labels_file=image_labels_voc.json",
        "--set", "dataset.classes=voc",
    ]  # fmt: skip


def _train_ids(coco_mini, n):
    return [line.strip() for line in (coco_mini / "ImageSets" / "Segmentation" / "train.txt").read_text().split()][:n]


def test_gt_scores_100_and_says_oracle(coco_mini, tmp_path, capsys):
    out = tmp_path / "gt"
    code = main(
        ["evaluate-labels", *_dataset(coco_mini), "--labeler", "gt", "--limit", "4", "--out", str(out), "--save-masks"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ORACLE labeler" in captured.err
    assert "pseudo-mask mIoU 100.00 on 4 images of split 'train'" in captured.out
    report = json.loads((out / "labels_report.json").read_text())
    assert report["oracle"] is True and report["miou"] == 1.0 and report["pixels_outside_labels"] == 0
    assert report["dataset"]["images"] == 4 and report["labeler"]["name"] == "gt"
    assert "ORACLE" in (out / "labels_report.md").read_text()
    for image_id in _train_ids(coco_mini, 4):
        np.testing.assert_array_equal(
            read_mask(out / "pseudo_masks" / f"{image_id}.png"),
            read_mask(coco_mini / "SegmentationClassVOC" / f"{image_id}.png"),
        )


def test_ignore_pixels_count_as_misses_and_foreign_classes_are_counted(coco_mini, tmp_path, capsys):
    """Pseudo masks = ground truth, except one class half set to ignore in one image and one
    foreign class painted in another: IoUs follow TP/(TP+FP+FN) with ignore as FN only."""
    ids = _train_ids(coco_mini, 3)
    masks = {i: read_mask(coco_mini / "SegmentationClassVOC" / f"{i}.png") for i in ids}
    labels = json.loads((coco_mini / "image_labels_voc.json").read_text())
    first = next(i for i in ids if labels[i])
    cls = labels[first][0]
    pseudo = {i: m.copy() for i, m in masks.items()}
    where = np.argwhere(masks[first] == cls)
    hidden = where[: len(where) // 2]
    pseudo[first][hidden[:, 0], hidden[:, 1]] = 255
    second = next(i for i in ids if i != first)
    foreign = next(c for c in range(1, 21) if c not in labels[second] and c != cls)
    pseudo[second][:10, :10] = foreign
    for i, m in pseudo.items():
        write_png(tmp_path / "pseudo" / f"{i}.png", m)
    code = main([
        "evaluate-labels", *_dataset(coco_mini), "--labeler", "precomputed",
        "--set", f"labeler.root={tmp_path / 'pseudo'}", "--set", "labeler.enforce_labels=false",
        "--limit", "3", "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "labels_report.json").read_text())
    assert report["oracle"] is False
    gt_total = sum(int((m == cls).sum()) for m in masks.values())
    expected = (gt_total - len(hidden)) / gt_total
    assert report["per_class_iou"][report_name(cls)] == pytest.approx(expected)
    assert report["ignored_gt_pixels"] == len(hidden)
    assert report["pixels_outside_labels"] == 100
    assert report["per_class_iou"][report_name(foreign)] == 0.0


def report_name(class_id: int) -> str:
    from moduseg_builtins.datasets import load_class_names

    return load_class_names("voc")[0][class_id]


def test_errors_are_one_line(coco_mini, tmp_path, capsys):
    assert main(["evaluate-labels", *_dataset(coco_mini), "--save-masks"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["Error: --save-masks needs --out DIR to write the pseudo masks into"]
    assert main(["evaluate-labels", *_dataset(coco_mini), "--labeler", "gtt"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "unknown labeler 'gtt'; did you mean 'gt'?" in err[0]


def test_a_broken_image_stops_the_job_or_is_skipped(broken_voc, tmp_path, capsys):
    """``--on-error``: the default stops at the corrupt image with one line; ``skip`` logs it, scores the others
    (the same scores as a split without it) and exits 3."""
    root, bad, _ = broken_voc
    dataset = ["--dataset", "voc", "--set", f"dataset.root={root}", "--set", "dataset.mask_dir=SegmentationClassVOC",
               "--set", "dataset.labels_file=image_labels_voc.json", "--set", "dataset.classes=voc", "--labeler", "gt"]
    out = tmp_path / "labels"
    assert main(["evaluate-labels", *dataset, "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("Error: ") and f"{bad}.jpg" in err[-1]
    assert not (out / "labels_report.json").exists()

    assert main(["evaluate-labels", *dataset, "--on-error", "skip", "--out", str(out)]) == 3
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(r["image"], r["stage"]) for r in rows] == [(bad, "read")]
    report = json.loads((out / "labels_report.json").read_text())
    assert report["skipped"] == {"images": 1, "log": "errors.jsonl"} and report["dataset"]["images"] == 5
    assert report["miou"] == 1.0  # the oracle on the four readable images
    assert "Skipped images" in (out / "labels_report.md").read_text()
    assert "1 image(s) skipped" in capsys.readouterr().err

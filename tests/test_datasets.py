"""The voc, coco and folder datasets on real coco-mini files."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import moduseg_core as ms
from moduseg_core.files.io import read_image

PLUGINS = "datasets,labelers,proposers,purifiers,aggregators"


@pytest.fixture(autouse=True)
def builtin_plugins(only_plugins):
    only_plugins(PLUGINS)


def voc(coco_mini: Path, **options):
    options = {"mask_dir": "SegmentationClassVOC", "labels_file": "image_labels_voc.json", **options}
    return ms.get_component("dataset", "voc", root=coco_mini, **options)


def json_labels(coco_mini: Path, name: str = "image_labels_voc.json") -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((coco_mini / name).read_text()).items()}


def split_ids(coco_mini: Path, split: str) -> list[str]:
    return (coco_mini / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


# --------------------------------------------------------------------------- voc on coco-mini


@pytest.mark.parametrize("split,count", [("train", 191), ("val", 103)])
def test_voc_on_coco_mini_counts_and_labels(coco_mini, split, count):
    ds = voc(coco_mini, split=split)
    assert [ds[i] for i in range(len(ds))] == list(ds) == list(ds)  # indexing agrees with iteration, re-iterable
    assert len(ds) == count and ds.split == split and ds.root == coco_mini
    assert ds.class_names == (coco_mini / "classes_voc.txt").read_text().splitlines()
    expected = json_labels(coco_mini)
    samples = list(ds)
    assert [s.id for s in samples] == split_ids(coco_mini, split)
    for s in samples:
        assert s.labels == expected[s.id]
        assert s.image_path == coco_mini / "JPEGImages" / f"{s.id}.jpg"
        assert s.mask_path == coco_mini / "SegmentationClassVOC" / f"{s.id}.png"


def test_labels_derived_from_masks_equal_the_json(coco_mini):
    for split in ("train", "val"):
        from_json = voc(coco_mini, split=split)
        from_masks = voc(coco_mini, split=split, labels_file="masks")
        assert from_masks.labels_source == "masks"
        assert [s.labels for s in from_masks] == [s.labels for s in from_json]
        assert from_masks.fingerprint() == from_json.fingerprint()


def test_coco_classes_on_coco_mini_default_labels_file(coco_mini):
    ds = ms.get_component("dataset", "voc", root=coco_mini, split="val", classes="coco", mask_dir="SegmentationClass")
    assert ds.labels_source == str(coco_mini / "image_labels.json")  # found under root
    assert len(ds.class_names) == 81 and ds.class_names[0] == "background"
    assert ds.class_names == (coco_mini / "classes.txt").read_text().splitlines()
    expected = json_labels(coco_mini, "image_labels.json")
    assert all(s.labels == expected[s.id] for s in ds)


def test_fingerprint_stable_and_split_dependent(coco_mini, tmp_path):
    train_a, train_b, val = voc(coco_mini), voc(coco_mini), voc(coco_mini, split="val")
    fp = train_a.fingerprint()
    assert fp == train_b.fingerprint()  # stable across instances
    assert re.fullmatch(r"[0-9a-f]{16}", fp), fp
    assert fp != val.fingerprint()
    # the labels are part of it: one image's labels changed → another fingerprint; same labels → the same
    labels = json_labels(coco_mini)
    first = split_ids(coco_mini, "train")[0]
    for changed, same in ((labels[first][:-1], False), (labels[first], True)):
        path = tmp_path / f"labels-{same}.json"
        path.write_text(json.dumps({k: list(changed if k == first else v) for k, v in labels.items()}))
        assert (voc(coco_mini, labels_file=str(path)).fingerprint() == fp) is same
    # so is the sample list: the fingerprint of the first n samples differs from the whole split's
    assert train_a.fingerprint(list(train_a)[:5]) != fp
    assert train_a.fingerprint(list(train_a)) == fp
    coco_classes = ms.get_component(
        "dataset", "voc", root=coco_mini, classes="coco", mask_dir="SegmentationClass", labels_file="image_labels.json"
    )
    assert coco_classes.fingerprint() != fp


def test_voc_layout_mask_dir_default_and_label_formats(coco_mini, tmp_path):
    ids = split_ids(coco_mini, "train")[:6]
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", root / "SegmentationClassAug")
    # the common train_aug.txt style: "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids)
    )
    expected = json_labels(coco_mini)

    ds = ms.get_component("dataset", "voc", root=root)  # no labels file: derived from SegmentationClassAug
    assert ds.labels_source == "masks"
    assert [s.mask_path.parent.name for s in ds] == ["SegmentationClassAug"] * len(ids)
    assert [s.labels for s in ds] == [expected[i] for i in ids]

    # cls_labels.npy: id → 20-dim multi-hot over the foreground classes
    cls = {i: np.isin(np.arange(1, 21), expected[i]).astype(np.float32) for i in ids}
    np.save(root / "cls_labels.npy", cls)
    # JSON multi-hot over all 21 classes, and CSV of names
    multi_hot = {i: np.isin(np.arange(21), expected[i]).astype(int).tolist() for i in ids}
    (root / "multi_hot.json").write_text(json.dumps(multi_hot))
    names = ds.class_names
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "labels"])
        for i in ids:
            writer.writerow([i, ";".join(names[c] for c in expected[i])])
    for labels_file in ("cls_labels.npy", "multi_hot.json", "labels.csv", str(root / "cls_labels.npy")):
        other = ms.get_component("dataset", "voc", root=root, labels_file=labels_file)
        assert [s.labels for s in other] == [expected[i] for i in ids], labels_file
        assert other.fingerprint() == ds.fingerprint()


# --------------------------------------------------------------------------- coco layout


def make_coco_layout(coco_mini: Path, root: Path) -> dict[str, list[str]]:
    picked = {"train2014": split_ids(coco_mini, "train")[:4], "val2014": split_ids(coco_mini, "val")[:3]}
    for folder, ids in picked.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "SegmentationClass" / folder).mkdir(parents=True)
        for i in ids:
            shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", root / "images" / folder)
            shutil.copy(coco_mini / "SegmentationClass" / f"{i}.png", root / "SegmentationClass" / folder)
    return picked


def test_coco_layout(coco_mini, tmp_path):
    picked = make_coco_layout(coco_mini, tmp_path)
    expected = json_labels(coco_mini, "image_labels.json")
    train = ms.get_component("dataset", "coco", root=tmp_path)
    assert len(train.class_names) == 81 and train.split == "train"
    assert [s.id for s in train] == sorted(picked["train2014"])
    assert all(s.labels == expected[s.id] for s in train)
    assert all(s.image_path.parent == tmp_path / "images" / "train2014" for s in train)
    val = ms.get_component("dataset", "coco", root=tmp_path, split="val")
    literal = ms.get_component("dataset", "coco", root=tmp_path, split="val2014")
    assert [s.id for s in val] == sorted(picked["val2014"])
    assert val.fingerprint() != literal.fingerprint()  # the split name is part of it
    assert [s.labels for s in val] == [s.labels for s in literal]

    (tmp_path / "val_subset.txt").write_text(picked["val2014"][0] + "\n")
    (tmp_path / "labels.json").write_text(json.dumps({i: list(expected[i]) for i in picked["val2014"]}))
    subset = ms.get_component(
        "dataset", "coco", root=tmp_path, split="val", split_file="val_subset.txt", labels_file="labels.json"
    )
    assert [s.id for s in subset] == picked["val2014"][:1]
    assert subset[0].labels == expected[picked["val2014"][0]]

    allowed = r"images/test does not exist; allowed splits: train, train2014, val, val2014"
    with pytest.raises(ms.ModusegError, match=allowed):
        ms.get_component("dataset", "coco", root=tmp_path, split="test")


# --------------------------------------------------------------------------- folder layout


def test_folder_layout(coco_mini, tmp_path):
    ids = split_ids(coco_mini, "val")[:4]
    expected = json_labels(coco_mini)
    (tmp_path / "images").mkdir()
    for i in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", tmp_path / "images")

    bare = ms.get_component("dataset", "folder", root=tmp_path)  # prediction only: no labels, no masks
    assert bare.split == "all" and [s.id for s in bare] == sorted(ids)
    assert all(s.labels == () and s.mask_path is None for s in bare) and bare.labels_source == "none"

    names = bare.class_names
    (tmp_path / "labels.json").write_text(json.dumps({f"{i}.jpg": [names[c] for c in expected[i]] for i in ids}))
    named = ms.get_component("dataset", "folder", root=tmp_path)
    assert [s.labels for s in named] == [expected[i] for i in sorted(ids)]

    (tmp_path / "labels.json").unlink()
    (tmp_path / "labels.csv").write_text("".join(f"{i},{';'.join(names[c] for c in expected[i])}\n" for i in ids))
    from_csv = ms.get_component("dataset", "folder", root=tmp_path)
    assert from_csv.labels_source.endswith("labels.csv")
    assert [s.labels for s in from_csv] == [expected[i] for i in sorted(ids)]

    (tmp_path / "labels.csv").unlink()
    (tmp_path / "masks").mkdir()
    for i in ids:
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", tmp_path / "masks")
    from_masks = ms.get_component("dataset", "folder", root=tmp_path)
    assert from_masks.labels_source == "masks"
    assert [s.labels for s in from_masks] == [expected[i] for i in sorted(ids)]
    assert from_masks.fingerprint() == from_csv.fingerprint()

    (tmp_path / "two.txt").write_text(f"{ids[1]}\n{ids[0]}\n")
    two = ms.get_component("dataset", "folder", root=tmp_path, split="two")
    assert [s.id for s in two] == [ids[1], ids[0]]


# --------------------------------------------------------------------------- errors


def test_missing_root_and_split_file(coco_mini, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ms.ModusegError, match=str(missing)):
        ms.get_component("dataset", "voc", root=missing)
    with pytest.raises(ms.ModusegError, match=r"split file .*nosuch\.txt does not exist"):
        voc(coco_mini, split="nosuch")
    with pytest.raises(ms.ModusegError, match="split must be a plain name"):
        voc(coco_mini, split="../train")


def test_label_id_out_of_range(coco_mini, tmp_path):
    labels = {k: list(v) for k, v in json_labels(coco_mini).items()}
    labels["000000000790"] = [5, 99]
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(labels))
    with pytest.raises(ms.ModusegError) as info:
        voc(coco_mini, labels_file=str(bad))
    message = str(info.value)
    assert str(bad) in message and "'000000000790'" in message and "99" in message and "1..20" in message
    assert "\n" not in message
    # the 81-class labels with the 21 VOC classes: caught the same way
    with pytest.raises(ms.ModusegError, match=r"image_labels\.json.*outside 1\.\.20"):
        voc(coco_mini, labels_file="image_labels.json")
    # a labels file that lacks an id of the split
    labels["000000000790"] = [5]
    del labels[split_ids(coco_mini, "train")[0]]
    bad.write_text(json.dumps(labels))
    with pytest.raises(ms.ModusegError, match=rf"{bad}.* has no entry for image '{split_ids(coco_mini, 'train')[0]}'"):
        voc(coco_mini, labels_file=str(bad))


def test_mask_ids_beyond_the_classes(coco_mini):
    ds = ms.get_component("dataset", "voc", root=coco_mini, mask_dir="SegmentationClass", labels_file="masks")
    with pytest.raises(ms.ModusegError, match=r"mask .*SegmentationClass/\d+\.png holds class id \d+, outside 0\.\.20"):
        ds.fingerprint()


def test_empty_split_and_missing_image(coco_mini, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ms.ModusegError, match=r"dataset 'voc' split 'train' has no samples"):
        voc(coco_mini, split_file=str(empty))
    listed = tmp_path / "listed.txt"
    listed.write_text("000000000790\n000000999999\n")
    with pytest.raises(ms.ModusegError, match=r"image .*JPEGImages/000000999999\.jpg does not exist"):
        voc(coco_mini, split_file=str(listed))


def test_corrupt_image_is_reported_when_read(coco_mini, tmp_path):
    (tmp_path / "images").mkdir()
    good = split_ids(coco_mini, "val")[0]
    shutil.copy(coco_mini / "JPEGImages" / f"{good}.jpg", tmp_path / "images")
    data = (coco_mini / "JPEGImages" / f"{good}.jpg").read_bytes()
    corrupt = tmp_path / "images" / "broken.jpg"
    corrupt.write_bytes(data[:200])
    ds = ms.get_component("dataset", "folder", root=tmp_path)
    samples = {s.id: s for s in ds}
    assert read_image(samples[good].image_path).shape[2] == 3
    with pytest.raises(ms.ModusegError, match=rf"image {corrupt} is unreadable or corrupt"):
        read_image(samples["broken"].image_path)


def test_partial_mask_folder_and_bad_classes_file(coco_mini, tmp_path):
    ids = split_ids(coco_mini, "train")[:3]
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    for i in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", tmp_path / "JPEGImages")
    shutil.copy(coco_mini / "SegmentationClassVOC" / f"{ids[0]}.png", tmp_path / "SegmentationClass")
    (tmp_path / "list.txt").write_text("\n".join(ids))
    with pytest.raises(ms.ModusegError, match=rf"mask .*SegmentationClass/{ids[1]}\.png does not exist \(2 of 3"):
        ms.get_component("dataset", "voc", root=tmp_path, split_file="list.txt")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ms.ModusegError, match=r"classes\.txt starts with 'cat', not background"):
        ms.get_component("dataset", "folder", root=tmp_path, image_dir="JPEGImages", classes="classes.txt")
    with pytest.raises(ms.ModusegError, match=r"classes file .*nope\.txt does not exist"):
        ms.get_component("dataset", "folder", root=tmp_path, image_dir="JPEGImages", classes="nope.txt")


def test_unknown_class_name_in_labels(coco_mini, tmp_path):
    (tmp_path / "images").mkdir()
    good = split_ids(coco_mini, "val")[0]
    shutil.copy(coco_mini / "JPEGImages" / f"{good}.jpg", tmp_path / "images")
    (tmp_path / "labels.json").write_text(json.dumps({good: ["persn"]}))
    with pytest.raises(ms.ModusegError, match=r"class name 'persn'.*did you mean 'person'"):
        ms.get_component("dataset", "folder", root=tmp_path)


def test_packaged_class_lists(coco_mini):
    from moduseg_builtins.datasets import load_class_names

    voc_names, _ = load_class_names("voc")
    coco_names, _ = load_class_names("coco")
    assert voc_names == (coco_mini / "classes_voc.txt").read_text().splitlines()
    assert coco_names == (coco_mini / "classes.txt").read_text().splitlines()
    assert voc_names[0] == coco_names[0] == "background" and len(voc_names) == 21 and len(coco_names) == 81

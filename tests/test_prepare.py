"""`moduseg prepare coco|voc`: fixture datasets in the official layouts (real coco-mini photos; a COCO
instances JSON with polygons, compressed and uncompressed RLE, crowd regions and overlaps), prepared
through the CLI and checked pixel for pixel against pycocotools' own ``COCO.annToMask``; the result
read by the ``coco`` / ``voc`` dataset plugins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import moduseg_core as ms
from moduseg_core.cli import main
from moduseg_core.files.io import read_mask

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_api
from pycocotools.coco import COCO

COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
            34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
            62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


def _uncompressed(binary: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = np.asarray(binary, np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(binary.shape)}


def _polygon(region: np.ndarray) -> list[float]:
    """A quadrilateral around the region's pixels (x, y pairs), as annotators draw one."""
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    return [x0, (y0 + y1) / 2, (x0 + x1) / 2, y0, x1, (y0 + y1) / 2, (x0 + x1) / 2, y1]


def _annotations(gt: np.ndarray, image_id: int, next_id: list[int]) -> list[dict]:
    """Per class of a real coco-mini mask: every kind of segmentation COCO files hold, overlapping."""
    anns = []
    h, w = gt.shape
    values = [int(v) for v in np.unique(gt) if v not in (0, 255)]
    kinds = ["polygon", "compressed", "uncompressed", "crowd", "polygon2"]
    for k, value in enumerate(values[:5]):
        region = gt == value
        kind = kinds[k % len(kinds)]
        if kind == "polygon":
            seg, crowd = [_polygon(region)], 0
        elif kind == "polygon2":  # an object in two parts
            ys, xs = np.nonzero(region)
            left, right = region & (np.arange(w) < xs.mean()), region & (np.arange(w) >= xs.mean())
            seg, crowd = [_polygon(p) for p in (left, right) if p.sum() > 20] or [_polygon(region)], 0
        elif kind == "compressed":
            rle = mask_api.encode(np.asfortranarray(region.astype(np.uint8)))
            seg, crowd = {"counts": rle["counts"].decode("ascii"), "size": [h, w]}, 0
        elif kind == "uncompressed":
            seg, crowd = _uncompressed(region), 0
        else:  # crowd regions come as uncompressed RLE in the official files
            seg, crowd = _uncompressed(region), 1
        anns.append({"id": next_id[0], "image_id": image_id, "category_id": COCO_IDS[value - 1],
                     "segmentation": seg, "iscrowd": crowd, "area": float(region.sum()), "bbox": [0, 0, 1, 1]})
        next_id[0] += 1
    # a box-shaped polygon over everything (overlaps the others), listed last
    anns.append(
        {
            "id": next_id[0],
            "image_id": image_id,
            "category_id": 44,
            "iscrowd": 0,
            "area": 1.0,
            "bbox": [0, 0, 1, 1],
            "segmentation": [[w * 0.3, h * 0.3, w * 0.6, h * 0.3, w * 0.6, h * 0.5, w * 0.3, h * 0.5]],
        }
    )
    next_id[0] += 1
    return anns


def make_coco(coco_mini: Path, root: Path) -> dict[str, Path]:
    """COCO 2014 as downloaded: images/{train2014,val2014}/COCO_<split>_<id>.jpg and annotations/instances_*.json."""
    names = (coco_mini / "classes.txt").read_text().split("\n")[1:81]
    categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(COCO_IDS, names, strict=True)]
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    files = {}
    next_id = [1]
    for split, chosen in (("train2014", ids[:3]), ("val2014", ids[3:5])):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        images, anns = [], []
        for k, i in enumerate(chosen):
            image_id = int(i)
            name = f"COCO_{split}_{i}.jpg"
            shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", folder / name)
            gt = read_mask(coco_mini / "SegmentationClass" / f"{i}.png")
            images.append({"id": image_id, "file_name": name, "height": gt.shape[0], "width": gt.shape[1]})
            if not (split == "train2014" and k == 2):  # one image without annotations
                anns += _annotations(gt, image_id, next_id)
        (root / "annotations").mkdir(exist_ok=True)
        files[split] = root / "annotations" / f"instances_{split}.json"
        files[split].write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return files


def expected_mask(coco: COCO, image_id: int, *, crowd: str, overlap: str) -> np.ndarray:
    """The documented rule, from pycocotools' annToMask: crowd first, then the others in file order
    (or largest first), later painting over earlier."""
    info = coco.imgs[image_id]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    cls = {c: k + 1 for k, c in enumerate(sorted(coco.cats))}
    anns = [coco.anns[a] for a in coco.getAnnIds(imgIds=[image_id])]
    for ann in anns:
        if ann["iscrowd"]:
            out[coco.annToMask(ann) == 1] = 255 if crowd == "ignore" else cls[ann["category_id"]]
    things = [(a, coco.annToMask(a)) for a in anns if not a["iscrowd"]]
    if overlap == "area":
        things.sort(key=lambda t: -int(t[1].sum()))
    for ann, m in things:
        out[m == 1] = cls[ann["category_id"]]
    return out


@pytest.fixture(scope="module")
def coco_files(coco_mini, tmp_path_factory) -> dict[str, Path]:
    return make_coco(coco_mini, tmp_path_factory.mktemp("coco-download"))


@pytest.mark.parametrize("crowd, overlap", [("class", "order"), ("ignore", "area")])
def test_prepare_coco_matches_ann_to_mask_pixel_for_pixel(coco_files, tmp_path, capsys, crowd, overlap):
    out = tmp_path / "coco"
    images = coco_files["train2014"].parents[1] / "images"
    argv = ["prepare", "coco", "-a", str(coco_files["train2014"]), "-a", str(coco_files["val2014"]),
            "--images", str(images), "--out", str(out), "--crowd", crowd, "--overlap", overlap]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train2014: 2 images (1 without annotations left out)" in printed and "val2014: 2 images" in printed
    labels = json.loads((out / "image_labels.json").read_text())
    kinds_seen, matched, total = set(), 0, 0
    for split, path in coco_files.items():
        coco = COCO(str(path))
        listed = (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        with_anns = sorted(coco.imgs[i]["file_name"][:-4] for i in coco.imgs if coco.getAnnIds(imgIds=[i]))
        assert listed == with_anns
        for image_id, info in coco.imgs.items():
            stem = info["file_name"][:-4]
            png = out / "SegmentationClass" / split / f"{stem}.png"
            if stem not in listed:
                assert not png.exists()
                continue
            got = read_mask(png)
            want = expected_mask(coco, image_id, crowd=crowd, overlap=overlap)
            matched += int((got == want).sum())
            total += want.size
            np.testing.assert_array_equal(got, want)
            assert labels[stem] == sorted(set(np.unique(want).tolist()) - {0, 255})
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
                seg = ann["segmentation"]
                kinds_seen.add("crowd" if ann["iscrowd"] else "polygon" if isinstance(seg, list)
                               else "uncompressed" if isinstance(seg["counts"], list) else "compressed")
        assert (out / "images" / split).resolve() == (images / split).resolve()
    assert kinds_seen == {"polygon", "compressed", "uncompressed", "crowd"}
    assert matched == total > 0
    summary = json.loads((out / "prepare_summary.json").read_text())
    ignore = summary["splits"]["train2014"]["ignore_pixels"] + summary["splits"]["val2014"]["ignore_pixels"]
    assert (ignore > 0) == (crowd == "ignore")
    assert summary["splits"]["train2014"]["crowd_regions"] >= 1
    # the coco plugin reads the prepared root as it is, with the same labels
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        ds = ms.get_component("dataset", "coco", root=out, split=split)
        assert [s.id for s in ds] == (out / "ImageSets" / "Segmentation" / f"{folder}.txt").read_text().split()
        assert all(list(s.labels) == labels[s.id] for s in ds)


def test_prepare_coco_2017_names_and_rerun(coco_files, tmp_path, capsys):
    """2017 files (another split name, plain file names), the images folder given as the split's own
    folder, and a rerun into the same output."""
    data = json.loads(coco_files["val2014"].read_text())
    flat = tmp_path / "val2017"
    flat.mkdir()
    for img in data["images"]:
        src = coco_files["val2014"].parents[1] / "images" / "val2014" / img["file_name"]
        img["file_name"] = img["file_name"].split("_")[-1]
        shutil.copy(src, flat / img["file_name"])
    ann = tmp_path / "instances_val2017.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "out"
    contents = []
    for _ in range(2):  # a rerun into its own output ends byte-identical
        assert main(["prepare", "coco", "-a", str(ann), "--images", str(flat), "--out", str(out)]) == 0
        contents.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert contents[0] == contents[1] and len(contents[0]) == 7  # 2 masks, list, labels, classes, summary, marker
    assert "val2017: 2 images" in capsys.readouterr().out
    ds = ms.get_component("dataset", "coco", root=out, split="val2017")
    assert len(ds) == 2 and all(s.id.isdigit() for s in ds)
    assert json.loads((out / ".moduseg-output.json").read_text())["state"] == "complete"


def test_prepare_coco_bad_input_one_line_nothing_written(coco_files, tmp_path, capsys):
    images = coco_files["train2014"].parents[1] / "images"
    out = tmp_path / "out"
    # an image the annotations name is missing
    assert main(["prepare", "coco", "-a", str(coco_files["train2014"]), "--images", str(images / "val2014"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the "reading FILE" note
    assert err.startswith("Error: image ") and "COCO_train2014_" in err
    assert not out.exists()
    # a folder moduseg did not write
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    assert main(["prepare", "coco", "-a", str(coco_files["train2014"]), "--images", str(images),
                 "--out", str(foreign), "--overwrite"]) == 2
    assert "not written by moduseg" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    # not an instances file; an unknown choice
    bad = tmp_path / "captions_train2014.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    assert main(["prepare", "coco", "-a", str(bad), "--images", str(images), "--out", str(out)]) == 2
    assert "lacks the lists images, annotations and categories" in capsys.readouterr().err
    assert main(["prepare", "coco", "-a", str(bad), "--images", str(images), "--out", str(out), "--crowd", "x"]) == 2
    assert "'x' is not one of" in capsys.readouterr().err
    assert not out.exists()


# -- voc -----------------------------------------------------------------------------------------------------


def make_voc(coco_mini: Path, root: Path) -> tuple[Path, Path]:
    """VOC2012 as downloaded (JPEGImages, SegmentationClass, ImageSets/Segmentation) and SBD's SegmentationClassAug."""
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    aug = root / "SegmentationClassAug"
    aug.mkdir()
    ids = (coco_mini / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:8]
    train, val = ids[:3], ids[3:5]  # the rest (ids[5:]) only in SegmentationClassAug
    for i in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", aug)
        if i in train + val:
            shutil.copy(coco_mini / "SegmentationClassVOC" / f"{i}.png", voc / "SegmentationClass")
    for name, part in (("train", train), ("val", val), ("trainval", train + val)):
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(part) + "\n")
    return voc, aug


def test_prepare_voc_labels_and_train_aug(coco_mini, tmp_path, capsys):
    voc, aug = make_voc(coco_mini, tmp_path / "download")
    out = tmp_path / "voc"
    assert main(["prepare", "voc", "--root", str(voc), "--aug", str(aug), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train_aug: 6 images" in printed and "val: 2 images" in printed and "ignore pixels" in printed
    labels = json.loads((out / "image_labels.json").read_text())
    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    train_aug = (out / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert train_aug == sorted(p.stem for p in aug.glob("*.png") if p.stem not in val)
    for i, found in labels.items():
        assert found == sorted(set(np.unique(read_mask(aug / f"{i}.png")).tolist()) - {0, 255})
    for split in ("train", "train_aug", "val"):
        ds = ms.get_component("dataset", "voc", root=out, split=split)
        assert ds.labels_source == str(out / "image_labels.json")
        derived = ms.get_component("dataset", "voc", root=out, split=split, labels_file="masks")
        assert [(s.id, s.labels) for s in ds] == [(s.id, s.labels) for s in derived]
    # without --aug: VOC's own splits only; a missing mask is one line and writes nothing
    assert main(["prepare", "voc", "--root", str(voc), "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "ImageSets" / "Segmentation" / "train_aug.txt").exists()
    capsys.readouterr()
    (voc / "SegmentationClass" / f"{val[0]}.png").unlink()
    assert main(["prepare", "voc", "--root", str(voc), "--out", str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: mask ") and "\n" not in err and val[0] in err and not (tmp_path / "broken").exists()


def test_prepare_help_lists_every_dataset_and_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from moduseg_core.cli import main\n"
        "from moduseg_core.contract.plugins import heavy_modules_loaded\n"
        "code = main(['prepare', '--help'])\n"
        "print('HEAVY', heavy_modules_loaded(), 'pycocotools' in sys.modules, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY [] False 0"
    import re

    for name in ("coco", "voc", "ade20k", "cityscapes"):  # rich's boxed help or click's plain one
        assert re.search(rf"^[│ ]*{name}\s", out.stdout, re.M), out.stdout

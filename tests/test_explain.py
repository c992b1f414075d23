"""See why (issue 24): the bank's provenance, each mask's evidence, report.html's evidence panel, the bank atlas.

Real components throughout (the coco-mini preset: gt labeler, SLIC, DINOv2-S), on a few images at a small encoder
size. The browser tests (headless Chromium) are slow."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.pipeline.provenance import decode_rle, encode_region

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "moduseg_core" / "presets" / "coco-mini.yaml")
OLD = ROOT / "tests" / "data" / "bank-c6b3320"
SMALL = ["--set", "encoder.resize=112", "--set", "method.batch_images=2"]


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("MODUSEG_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")


def _bank_args(coco: Path, limit: int = 6) -> list[str]:
    return ["-c", PRESET, "--set", f"dataset.root={coco}", "--set", f"bank_limit={limit}", *SMALL]


@pytest.fixture(scope="module")
def bank_dir(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "bank"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODUSEG_PROGRESS", "0")
        mp.setenv("SOURCE_DATE_EPOCH", "0")
        assert main(["build-bank", *_bank_args(coco_mini), "--out", str(out)]) == 0
    return out


def _val_image(coco: Path, n: int = 0) -> Path:
    return coco / "JPEGImages" / f"{(coco / 'ImageSets/Segmentation/val.txt').read_text().split()[n]}.jpg"


def test_rle_round_trips_and_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for t in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        if t % 4 == 0:
            mask[:] = False
            mask[h // 3 :, w // 4 :] = True
        box, rle = encode_region(mask)
        assert np.array_equal(decode_rle(rle, (h, w)), mask)
        assert mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode() == rle
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_provenance_names_each_vector_and_the_dropped_outliers(bank_dir, coco_mini):
    from moduseg_core.contract.components import build
    from moduseg_core.contract.config import Choice
    from moduseg_core.files.io import read_image
    from moduseg_core.pipeline.bank import Bank

    bank = Bank.load(bank_dir)
    assert bank.manifest["format_version"] == 2 and bank.manifest["provenance"] == "provenance.jsonl"
    provenance = bank.traced()
    assert len(provenance) == len(bank)
    ids = (coco_mini / "ImageSets/Segmentation/train.txt").read_text().split()[:6]
    assert [entry["image"] for entry in provenance.images] == ids  # canonical order
    for row in range(len(bank)):
        assert provenance.row(row)["class"] == int(bank.labels[row])
    # the outlier filter: per foreground class floor(0.25 n) dropped, the farthest from the class mean
    regions = list(provenance.regions())
    for c in {r["class"] for r in regions}:
        mine = [r for r in regions if r["class"] == c]
        dropped = [r for r in mine if r["row"] is None]
        assert len(dropped) == (0 if c == 0 else math.floor(0.25 * len(mine)))
        if dropped:
            assert min(r["distance"] for r in dropped) >= max(r["distance"] for r in mine if r["row"] is not None)
    counts = provenance.counts(len(bank.class_names))
    manifest = bank.manifest["counts"]
    assert counts["seen"].sum() == manifest["regions"] and counts["small"].sum() == manifest["regions_below_min_area"]
    # the region of a row, pooled again on its image, gives the row's vector
    encoder = build("encoder", Choice(**{k: bank.encoder[k] for k in ("name", "options")}))
    aggregator = build("aggregator", Choice(**{k: bank.aggregator[k] for k in ("name", "options")}))
    for row in (0, len(bank) - 1):
        entry = provenance.row(row)
        image = read_image(entry["path"])
        assert list(image.shape[:2]) == entry["size"]
        (features,) = encoder.component.encode_batch([image])
        vector = aggregator.component.aggregate(features, decode_rle(entry["rle"], entry["size"])[None])[0]
        np.testing.assert_allclose(vector, bank.vectors[row], atol=1e-4)


def test_in_process_and_sharded_builds_write_the_same_provenance(bank_dir, coco_mini, tmp_path):
    from moduseg_core.contract.config import apply_overrides, load_config
    from moduseg_core.pipeline.runner import bank_from_config

    sets = [s for s in _bank_args(coco_mini)[2:] if s != "--set"]
    config = apply_overrides(load_config(Path(PRESET)), choices={}, sets=sets)
    bank = bank_from_config(config)
    bank.save(tmp_path / "here")
    for name in ("provenance.jsonl", "vectors.npy", "labels.npy"):
        assert (tmp_path / "here" / name).read_bytes() == (bank_dir / name).read_bytes(), name


@pytest.mark.slow
def test_add_keeps_provenance(bank_dir, coco_mini, tmp_path):
    from moduseg_core.pipeline.bank import Bank

    out = tmp_path / "bank"
    shutil.copytree(bank_dir, out)
    args = ["build-bank", *_bank_args(coco_mini), "--set", "bank_split=val", "--set", "bank_limit=2", "--add"]
    assert main([*args, "--out", str(out)]) == 0
    bank = Bank.load(out)
    provenance = bank.traced()
    train = (coco_mini / "ImageSets/Segmentation/train.txt").read_text().split()[:6]
    val = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:2]
    assert [entry["image"] for entry in provenance.images] == train + val
    assert len(provenance) == len(bank) and all(provenance.row(r)["class"] == bank.labels[r] for r in range(len(bank)))


def test_evidence_agrees_with_a_direct_index_search(bank_dir, coco_mini):
    from moduseg_core.files.io import read_image
    from moduseg_core.method.vote import vote
    from moduseg_core.pipeline.segmenter import Segmenter

    seg = Segmenter.from_bank(bank_dir, sets=["proposer.n_segments=[30]"])
    image = read_image(_val_image(coco_mini))
    explained = seg.explain(image)
    assert explained["bank_provenance"] is True and explained["masks"]
    predictor, bank = seg.predictor, seg.predictor.bank
    assert predictor.explain is False  # asked once, then off again
    ((masks, vectors),) = predictor.propose_and_describe([image], [None])  # the masks pooled again, independently
    k = min(predictor.method.top_k, len(bank))
    sims, labels = bank.index.search(vectors, k)
    exact = np.argsort(-(vectors @ bank.vectors.T), axis=1, kind="stable")[:, :k]
    winners, scores = vote(sims, labels)
    provenance = bank.traced()
    assert len(explained["masks"]) == len(vectors)
    for i, mask in enumerate(explained["masks"]):
        rows = [n["row"] for n in mask["neighbours"]]
        assert rows == exact[i].tolist()
        assert [n["class"] for n in mask["neighbours"]] == [bank.class_names[c] for c in labels[i]]
        np.testing.assert_allclose([n["similarity"] for n in mask["neighbours"]], sims[i], atol=1e-5)
        assert [n["image"] for n in mask["neighbours"]] == [provenance.row(r)["image"] for r in rows]
        assert mask["label_id"] == winners[i] and abs(mask["score"] - scores[i]) < 1e-5
        assert sum(v["count"] for v in mask["votes"]) == k and mask["votes"][0]["class"] == mask["label"]
        assert np.array_equal(decode_rle(mask["rle"], explained["size"]), masks[i])
    # the class map of a plain call is the one whose kept masks the evidence marks
    result = seg(image)
    kept = [m for m in explained["masks"] if m["kept"]]
    assert sorted(m["label_id"] for m in kept) == sorted(result.labels.tolist())


def test_no_evidence_unless_asked(bank_dir, coco_mini):
    from moduseg_core.files.io import read_image
    from moduseg_core.pipeline.segmenter import Segmenter

    seg = Segmenter.from_bank(bank_dir, sets=["proposer.n_segments=[30]"])
    (prediction,) = seg.predictor.predict_batch([read_image(_val_image(coco_mini))], [None])
    assert prediction.evidence is None


@pytest.mark.slow
def test_old_bank_predicts_and_says_it_has_no_provenance(coco_mini, tmp_path, capsys):
    pytest.importorskip("onnx")
    from moduseg_core.pipeline.evidence import read_explain

    bank = tmp_path / "old"
    shutil.copytree(OLD, bank)
    out = tmp_path / "pred"
    args = ["predict", str(_val_image(coco_mini)), "--bank", str(bank), "--set", "proposer.n_segments=[30]"]
    assert main([*args, "--explain", "--out", str(out)]) == 0
    assert "no provenance: rebuild to explain" in capsys.readouterr().err
    (line,) = read_explain(out / "explain.jsonl")
    assert line["bank_provenance"] is False and line["masks"]
    assert all(n["image"] is None and n["class"] for m in line["masks"] for n in m["neighbours"])
    assert main(["bank", "show", str(bank), "--out", str(tmp_path / "atlas")]) == 0
    page = (tmp_path / "atlas" / "atlas.html").read_text()
    assert "no provenance: rebuild to explain" in page and 'id="map"' in page


def test_bad_input_is_one_line_and_writes_nothing(bank_dir, coco_mini, tmp_path, capsys):
    out = tmp_path / "atlas"
    assert main(["bank", "show", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "not a moduseg bank" in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(["bank", "show", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err and not out.exists()
    run = tmp_path / "run"
    args = ["run", *_bank_args(coco_mini), "--bank", str(bank_dir), "--executor", "ray", "--explain", "--out", str(run)]
    pytest.importorskip("ray")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--explain needs --executor local" in err and len(err.splitlines()) == 1 and not run.exists()


def test_atlas_counts_and_loo_confusion(bank_dir):
    from moduseg_core.pipeline.bank import Bank
    from moduseg_core.pipeline.bank_stats import loo_knn, pca_2d
    from moduseg_core.report_html.atlas import atlas_html

    bank = Bank.load(bank_dir)
    k = min(25, len(bank) - 1)
    matrix = loo_knn(bank.vectors, bank.labels, k, len(bank.class_names), block=3)
    assert matrix.sum() == len(bank)
    # by hand: each vector's k nearest others (ties: the lower row) vote with the method's vote
    from moduseg_core.method.vote import vote

    expected = np.zeros_like(matrix)
    for i in range(len(bank)):
        sims = bank.vectors @ bank.vectors[i]
        sims[i] = -np.inf
        order = np.argsort(-sims, kind="stable")[:k]
        (winner,), _ = vote(sims[order][None], bank.labels[order][None])
        expected[bank.labels[i], winner] += 1
    assert np.array_equal(matrix, expected)
    points, share = pca_2d(bank.vectors)
    assert points.shape == (len(bank), 2) and 0 < share[0] <= 1
    html = atlas_html(bank)
    assert 'id="grids"' in html and 'id="map"' in html and html.count("<circle") == len(bank)
    assert not any(f'{attr}="http' in html for attr in ("src", "href"))


# -- in a real browser (slow) ---------------------------------------------------------------------

RUN = [
    "--set",
    "bank_limit=24",
    "--set",
    "eval_limit=3",
    "--set",
    "encoder.resize=224",
    "--set",
    "proposer.n_segments=[40]",
    "--set",
    "method.batch_images=4",
    "--set",
    "method.top_k=5",  # a bank this small is mostly background: with k=25 every mask would be background
]


@pytest.fixture(scope="module")
def explained_run(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explained") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODUSEG_PROGRESS", "0")
        assert (
            main(["run", "-c", PRESET, "--set", f"dataset.root={coco_mini}", *RUN, "--explain", "--out", str(out)]) == 0
        )
    return out


def inside_point(line: dict) -> tuple[dict, float, float]:
    """A foreground mask that the class map shows, and a point (fractions of the picture) deep inside it."""
    from scipy import ndimage

    shown = [m for m in line["masks"] if m["kept"] and m["label_id"] != 0]
    first = min(shown, key=lambda m: m["paint"])  # painted first: every pixel of it is its own
    mask = decode_rle(first["rle"], line["size"])
    depth = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(np.argmax(depth), depth.shape)
    return first, (x + 0.5) / mask.shape[1], (y + 0.5) / mask.shape[0]


@pytest.mark.slow
def test_browser_opens_a_regions_evidence(explained_run, tmp_path):
    from test_html_report import _browse, _console_errors, _parse

    from moduseg_core.pipeline.evidence import read_explain

    lines = [
        line
        for line in read_explain(explained_run / "explain.jsonl")
        if any(m["kept"] and m["label_id"] for m in line["masks"])
    ]
    assert lines, "no foreground prediction to explain"
    line = lines[0]
    mask, fx, fy = inside_point(line)
    html = (explained_run / "report.html").read_text()
    assert 'id="atlas-link"' in html and (explained_run / "atlas.html").is_file()
    assert len(html) < 20 * 2**20 and not any(f'{a}="http' in html for a in ("src", "href"))
    done = _browse(
        explained_run / "report.html", tmp_path, "--dump-dom", hash_=f"#explain={line['image']}@{fx:.4f},{fy:.4f}"
    )
    assert done.returncode == 0 and _console_errors(done.stderr) == [], done.stderr[-2000:]
    page = _parse(done.stdout)
    assert page.errors_text == [] and page.body.get("data-ready") == "1"
    dom = done.stdout
    panel = dom[dom.index('<aside id="evidence"') : dom.index("</aside>")]
    assert "hidden" not in panel[:60]
    assert f'<b id="ev-label">{mask["label"]}</b>' in panel
    grid = panel[panel.index('id="ev-neighbours"') :]
    classes = [c for c in re.findall(r'<figure class="ev-n" data-class="([^"]*)"', grid)]
    k = len(mask["neighbours"])
    assert classes[:k] == [n["class"] for n in mask["neighbours"]]
    assert grid.count('<img alt="" src="data:image/jpeg') >= k  # every neighbour has its picture


@pytest.mark.slow
def test_browser_renders_the_atlas(explained_run, tmp_path):
    from test_html_report import _browse, _console_errors

    from moduseg_core.pipeline.bank import Bank

    bank = Bank.load(explained_run / "bank")
    done = _browse(explained_run / "atlas.html", tmp_path, "--dump-dom")
    assert done.returncode == 0 and _console_errors(done.stderr) == [], done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<circle") == len(bank)
    grids = dom[dom.index('id="grids"') :]
    classes = {r["class"] for r in bank.traced().regions()}
    assert grids.count('<div class="cls"') == len(classes)
    assert grids.count('<figure class="kept"') >= len(set(bank.labels.tolist()))
    assert '<figure class="dropped"' in grids
    shot = tmp_path / "atlas.png"
    done = _browse(explained_run / "atlas.html", tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert done.returncode == 0 and shot.is_file()


def test_a_wrong_label_names_the_nearest_region_of_the_right_class_and_its_rank(bank_dir, coco_mini):
    from moduseg_core.files.io import read_image
    from moduseg_core.pipeline.evidence import add_truth
    from moduseg_core.pipeline.segmenter import Segmenter

    seg = Segmenter.from_bank(bank_dir, sets=["proposer.n_segments=[30]"])
    predictor, bank = seg.predictor, seg.predictor.bank
    image = read_image(_val_image(coco_mini))
    predictor.explain = True
    (prediction,) = predictor.predict_batch([image], [None])
    evidence = prediction.evidence
    right = int(max(set(bank.labels.tolist()) - {0}))  # a foreground class of the bank
    gt = np.full(image.shape[:2], right, np.uint8)  # "the ground truth": that class everywhere
    add_truth(evidence, gt, bank)
    for item in evidence.items:
        if item.label == right:
            assert item.truth is None
            continue
        sims = bank.vectors @ item.vector
        members = np.flatnonzero(bank.labels == right)
        best = members[np.argmax(sims[members])]
        order = np.argsort(-sims, kind="stable")  # ties: the lower row first, as the index
        assert item.truth["row"] == best and item.truth["rank"] == int(np.flatnonzero(order == best)[0]) + 1

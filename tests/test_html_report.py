"""report.html: generated from a tiny real run on coco-mini (self-contained, headline, charts, gallery
with per-image IoU computed independently here), opened in headless Chromium (file://): no console
errors, the expected number of gallery items, sorting and class filtering by URL hash; a screenshot.

Browser test alone: ``.venv/bin/python -m pytest tests/test_html_report.py -k browser``. Chromium is
Debian's ``chromium`` (``.ci/run`` installs it); without it the browser tests skip, except on CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core.cli import main
from moduseg_core.files.legend import legend_strip, present_classes, with_legend
from moduseg_core.report_html import images as report_images
from moduseg_core.report_html import run_html, sweep_html, write_run_html

EVAL_IMAGES = 4
TINY = ["--set", "bank_limit=6", "--set", f"eval_limit={EVAL_IMAGES}", "--set", "encoder.resize=112",
        "--set", "proposer.n_segments=[20]", "--set", "method.batch_images=2"]


def _samples(coco_mini: Path, n: int = EVAL_IMAGES):
    from moduseg_core.contract.types import Sample

    ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:n]
    return [Sample(id=i, image_path=coco_mini / "JPEGImages" / f"{i}.jpg",
                   mask_path=coco_mini / "SegmentationClassVOC" / f"{i}.png") for i in ids]


@pytest.fixture(scope="module")
def tiny_run(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "run"
    assert main(["demo", "--data", str(coco_mini), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def class_names(tiny_run) -> list[str]:
    return list(json.loads((tiny_run / "report.json").read_text())["per_class_iou"])


@pytest.fixture(scope="module")
def run_page(tiny_run) -> Path:
    return tiny_run / "report.html"  # the run writes it


def test_run_records_its_page_and_overlays_have_a_legend(tiny_run, coco_mini):
    from moduseg_core.files.outputs import read_marker

    assert "report.html" in read_marker(tiny_run)["files"]
    for sample in _samples(coco_mini):
        with Image.open(sample.image_path) as photo, Image.open(tiny_run / "overlays" / f"{sample.id}.jpg") as shown:
            assert shown.width == photo.width and shown.height > photo.height  # the legend strip below the photo


def test_write_run_html_rebuilds_the_page_of_a_folder(tiny_run, coco_mini, class_names, tmp_path):
    shutil.copytree(tiny_run / "predictions", tmp_path / "predictions")
    report = json.loads((tiny_run / "report.json").read_text())
    page = write_run_html(tmp_path, report, _samples(coco_mini), class_names)
    assert page.read_bytes() == (tiny_run / "report.html").read_bytes()  # same report and files, same bytes


def test_evaluate_out_writes_scores_and_page(tiny_run, coco_mini, tmp_path, capsys):
    out = tmp_path / "eval"
    preset = ["-c", str(Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml"),
              "--set", f"dataset.root={coco_mini}", "--set", f"eval_limit={EVAL_IMAGES}"]
    assert main(["evaluate", str(tiny_run / "predictions"), *preset, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    run = json.loads((tiny_run / "report.json").read_text())
    assert report["miou"] == pytest.approx(run["miou"]) and report["oracle"] is True
    html = (out / "report.html").read_text()
    assert len(_parse(html).items) == EVAL_IMAGES and 'id="oracle"' in html and "report.html" in capsys.readouterr().out


def test_ablate_writes_a_page_comparing_points(coco_mini, tmp_path):
    out = tmp_path / "sweep"
    preset = ["-c", str(Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml"),
              "--set", f"dataset.root={coco_mini}", "--set", "bank_limit=4", "--set", "eval_limit=2",
              "--set", "encoder.resize=112", "--set", "proposer.n_segments=[20]"]
    code = main(
        ["ablate", *preset, "--grid", "method.top_k=1,5", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    )
    assert code == 0
    html = (out / "report.html").read_text()
    page = _parse(html)
    assert page.external == [] and 'id="results"' in html and len(page.items) == 2
    assert html.count('class="panel"') == 2 * 4  # image, ground truth and both points
    from moduseg_core.files.outputs import read_marker

    assert "report.html" in read_marker(out)["files"]


def _expected_iou(coco_mini: Path, run: Path, n_classes: int) -> dict[str, float]:
    """Per-image IoU computed here, independently of the report code."""
    out = {}
    for sample in _samples(coco_mini):
        gt = np.asarray(Image.open(sample.mask_path)).astype(np.int64)
        pred = np.asarray(Image.open(run / "predictions" / f"{sample.id}.png")).astype(np.int64)
        ious = []
        for c in range(n_classes):
            valid = gt != 255
            g, p = (gt == c) & valid, (pred == c) & valid
            union = (g | p).sum()
            if union:
                ious.append((g & p).sum() / union)
        out[sample.id] = float(np.mean(ious))
    return out


class _Gallery(HTMLParser):
    """The gallery items (their attributes, in document order) and the page's external references."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, str]] = []
        self.external: list[str] = []
        self.errors_text: list[str] = []
        self._in_errors = False
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "figure" and "item" in a.get("class", "").split():
            self.items.append(a)
        if tag == "body":
            self.body = a
        if tag == "pre" and a.get("id") == "js-errors":
            self._in_errors = True
        for key in ("src", "href"):
            value = a.get(key, "")
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_errors = False

    def handle_data(self, data):
        if self._in_errors and data.strip():
            self.errors_text.append(data)


def _parse(html: str) -> _Gallery:
    parser = _Gallery()
    parser.feed(html)
    return parser


# -- generation (no browser) ----------------------------------------------------------------------

def test_run_page_is_self_contained_and_has_the_headline(run_page, tiny_run):
    html = run_page.read_text()
    report = json.loads((tiny_run / "report.json").read_text())
    page = _parse(html)
    assert page.external == []  # nothing fetched: every picture is a data: URI
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html) and "url(http" not in html
    assert "ORACLE" in html and 'id="oracle"' in html  # the demo's labeler is the gt oracle
    assert f"{100 * report['miou']:.2f}" in html and "mean of" in html and "dataset-level IoU" in html
    assert f"{100 * report['boundary']['f_score']:.2f}" in html and f"{100 * report['boundary']['iou']:.2f}" in html
    assert 'id="images"' in html and "<svg" in html and "confusion matrix" in html
    assert len(page.items) == EVAL_IMAGES
    assert len(html) < 1_000_000


def test_gallery_iou_matches_an_independent_computation(run_page, tiny_run, coco_mini, class_names):
    expected = _expected_iou(coco_mini, tiny_run, len(class_names))
    items = _parse(run_page.read_text()).items
    got = {a["data-id"]: float(a["data-iou"]) for a in items}
    assert got.keys() == expected.keys()
    for image_id, value in expected.items():
        assert got[image_id] == pytest.approx(value, abs=1e-5), image_id
    # written in worst-first order already; every item names its classes for the filter
    assert [a["data-id"] for a in items] == [a["data-id"] for a in items]  # document order is stable
    assert all(a["data-classes"] for a in items)


def test_report_without_scores_or_predictions_still_renders(class_names):
    html = run_html({"oracle": False, "eval": {"name": "voc", "split": "val", "images": 0}}, [], None, class_names)
    assert "<h1>" in html and 'id="oracle"' not in html and 'class="item"' not in html


def test_gallery_cap_keeps_both_ends():
    ids = [f"i{k:03d}" for k in range(50)]
    iou = {i: k / 50 for k, i in enumerate(ids)}
    chosen = report_images.choose(ids, iou, 10)
    assert len(chosen) == 10 and ids[0] in chosen and ids[-1] in chosen and ids[4] in chosen


def test_mask_overlay_is_transparent_with_opaque_outlines():
    classes = np.zeros((40, 60), np.int32)
    classes[10:30, 10:40] = 15
    png = report_images.mask_overlay_png(classes, (60, 40))
    from io import BytesIO

    picture = Image.open(BytesIO(png)).convert("RGBA")
    alpha = np.asarray(picture)[..., 3]
    assert alpha[0, 0] == 0  # background clear
    assert alpha[20, 25] == report_images.FILL_ALPHA  # fill half transparent
    assert alpha[10, 25] == report_images.EDGE_ALPHA  # outline opaque


def test_sweep_page_compares_points(tiny_run, coco_mini, class_names, tmp_path):
    report = json.loads((tiny_run / "report.json").read_text())
    other = tmp_path / "p1" / "predictions"
    other.mkdir(parents=True)
    for png in (tiny_run / "predictions").glob("*.png"):  # a second point: 'person' everywhere
        Image.fromarray(np.full(np.asarray(Image.open(png)).shape, class_names.index("person"), np.uint8)).save(
            other / png.name
        )
    reports = [report | {"point": 0, "slug": "p0", "axes": {"method.top_k": 25}},
               {**report, "point": 1, "slug": "p1", "axes": {"method.top_k": 1}, "miou": 0.01}]
    results = {"sweep": {"name": "t", "points": 2, "wall": 1.0}, "axes": {"grid": {"method.top_k": [25, 1]}, "zip": {}}}
    html = sweep_html(results, reports, _samples(coco_mini), {0: tiny_run, 1: tmp_path / "p1"}, class_names,
                      {"miou.png": (tiny_run / "predictions" / f"{_samples(coco_mini)[0].id}.png").read_bytes()})
    page = _parse(html)
    assert page.external == [] and 'id="results"' in html and "sortable" in html
    assert len(page.items) == EVAL_IMAGES and html.count("#0 25") >= 2 and "#1 1" in html
    # the largest IoU spread between the points comes first
    spreads = [float(a["data-spread"]) for a in page.items]
    assert max(spreads) > 0


def test_overlay_legend_names_the_classes(class_names):
    classes = np.zeros((120, 400), np.int32)
    classes[10:50, 10:50] = class_names.index("person")
    classes[60:100, 200:300] = class_names.index("chair")
    assert present_classes(classes) == sorted([class_names.index("person"), class_names.index("chair")])
    image = np.full((120, 400, 3), 128, np.uint8)
    out = with_legend(image, classes, class_names)
    assert out.shape[0] > 120 and out.shape[1] == 400 and np.array_equal(out[:120], image)
    strip = out[120:]
    palette = report_images.voc_palette()
    for c in present_classes(classes):  # each class's swatch is in the strip
        assert (strip.reshape(-1, 3) == palette[c]).all(1).any()
    assert legend_strip(200, [], class_names).shape[1] == 200


# -- in a real browser ----------------------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


def _browse(page: Path, tmp: Path, *extra: str, hash_: str = "") -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    argv = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri() + hash_,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line or ("CONSOLE" in line and ("ERROR" in line or "Error" in line))
    ]


def test_browser_renders_sorts_and_filters(run_page, tiny_run, coco_mini, class_names, tmp_path):
    expected = _expected_iou(coco_mini, tiny_run, len(class_names))
    done = _browse(run_page, tmp_path, "--dump-dom", hash_="#sort=iou-desc")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console_errors(done.stderr) == []
    page = _parse(done.stdout)
    assert page.body.get("data-ready") == "1" and page.errors_text == []
    assert len(page.items) == EVAL_IMAGES
    order = [a["data-id"] for a in page.items]
    assert order == sorted(expected, key=lambda i: -expected[i])
    worst = _parse(_browse(run_page, tmp_path, "--dump-dom", hash_="#sort=iou-asc").stdout).items
    assert [a["data-id"] for a in worst] == sorted(expected, key=lambda i: expected[i])
    # filtering by a class present in some images only hides the others
    counts: dict[str, int] = {}
    for a in page.items:
        for name in a["data-classes"].split("|"):
            counts[name] = counts.get(name, 0) + 1
    name = min(counts, key=lambda n: (counts[n], n))
    filtered = _parse(_browse(run_page, tmp_path, "--dump-dom", hash_=f"#sort=id-asc&class={name}").stdout).items
    visible = [a["data-id"] for a in filtered if "hidden" not in a]
    assert len(visible) == counts[name] and all(
        name in a["data-classes"].split("|") for a in filtered if "hidden" not in a
    )
    assert [a["data-id"] for a in filtered] == sorted(a["data-id"] for a in filtered)


def test_browser_screenshot(run_page, tmp_path):
    shot = tmp_path / "report.png"
    done = _browse(run_page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert _console_errors(done.stderr) == []
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 10  # not a blank page

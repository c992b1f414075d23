"""Bad and unusual inputs through the command line: each is refused with exit code 2 and one
``Error:`` line naming the bad value, and leaves nothing behind; the unusual but valid ones work.

Real components throughout: a bank built by ``moduseg build-bank`` from coco-mini (SLIC proposals,
the offline DINOv2 encoder), real files written by Pillow and numpy, damaged byte for byte."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "moduseg_core" / "presets" / "coco-mini.yaml"
IMAGE_ID = "000000000139"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MODUSEG_PROGRESS", "0")
    monkeypatch.delenv("MODUSEG_DEBUG", raising=False)


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, ``Error: ...``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """What a refused command left at its output path (which did not exist): nothing at all, neither files nor
    its output marker nor the folder itself."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) or ["(the empty folder)"]


@pytest.fixture(scope="module")
def bank(coco_mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "bank"
    os.environ["MODUSEG_PROGRESS"] = "0"
    code = main(
        [
            "build-bank",
            "--config",
            str(PRESET),
            "--set",
            f"dataset.root={coco_mini}",
            "--set",
            "bank_limit=2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


# -- images given to predict --------------------------------------------------------------------------


def _truncated(suffix: str):
    def write(path: Path, coco_mini: Path):
        data = (coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg").read_bytes()
        if suffix == ".png":
            buffer = path.with_name("full.png")
            Image.open(coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg").save(buffer)
            data = buffer.read_bytes()
            buffer.unlink()
        path.write_bytes(data[: len(data) * 2 // 3])

    return write


BAD_IMAGES = [
    ("empty file", "x.png", lambda p, c: p.write_bytes(b""), "unreadable or corrupt"),
    ("text named .jpg", "x.jpg", lambda p, c: p.write_text("hello\n"), "unreadable or corrupt"),
    ("html named .png", "x.png", lambda p, c: p.write_text("<html>Not Found</html>"), "unreadable or corrupt"),
    ("png signature only", "x.png", lambda p, c: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "unreadable or corrupt"),
    ("truncated jpeg", "x.jpg", _truncated(".jpg"), "unreadable or corrupt"),
    ("truncated png", "x.png", _truncated(".png"), "unreadable or corrupt"),
    (
        "float tiff with NaN",
        "x.tif",
        lambda p, c: Image.fromarray(np.full((32, 32), np.nan, np.float32)).save(p),
        "NaN or infinite pixels",
    ),
    ("a folder named x.jpg", "x.jpg", lambda p, c: p.mkdir(), "is a folder, not an image file"),
]


@pytest.mark.parametrize("name,filename,write,message", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_predict_refuses_undecodable_images(capsys, tmp_path, bank, coco_mini, name, filename, write, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = inputs / filename
    write(path, coco_mini)
    out = tmp_path / "out"
    line = one_error(capsys, ["predict", path if not path.is_dir() else inputs, "--bank", bank, "--out", out])
    assert f"image {path} " in line and message in line
    assert leftovers(out) == []


def test_predict_refuses_an_image_over_the_pixel_limit(capsys, tmp_path, bank, coco_mini):
    image = coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg"
    out = tmp_path / "out"
    line = one_error(
        capsys, ["predict", image, "--bank", bank, "--out", out, "--set", "method.max_image_pixels=100000"]
    )
    assert f"image {image} is 640×426 (0.3 MP), more than method.max_image_pixels=100000" in line
    assert "--set method.max_image_pixels=N" in line
    assert leftovers(out) == []


# -- unusual images that predict must handle --------------------------------------------------------


def _exif6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def test_predict_segments_16bit_gray_and_rotated_photos_at_their_displayed_size(tmp_path, bank, coco_mini):
    photo = np.asarray(Image.open(coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg").convert("RGB"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    gray = photo.mean(axis=2).round().astype(np.uint16) * 257
    Image.fromarray(gray).save(inputs / "gray16.png")
    Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1))).save(inputs / "portrait.jpg", exif=_exif6(), quality=95)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(inputs / "rgba.png")
    out = tmp_path / "out"
    assert main(["predict", str(inputs), "--bank", str(bank), "--out", str(out)]) == 0
    sizes = {p.stem: Image.open(p).size for p in (out / "predictions").glob("*.png")}
    assert sizes == {"gray16": (640, 426), "portrait": (640, 426), "rgba": (640, 426)}  # upright = the photo's own size
    # the opaque RGBA copy is the same picture: the same segmentation
    rgba_map = np.asarray(Image.open(out / "predictions" / "rgba.png"))
    assert (
        main(
            [
                "predict",
                str(coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg"),
                "--bank",
                str(bank),
                "--out",
                str(tmp_path / "ref"),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        rgba_map, np.asarray(Image.open(tmp_path / "ref" / "predictions" / f"{IMAGE_ID}.png"))
    )


# -- precomputed proposals ------------------------------------------------------------------------


def _npz(**arrays):
    def write(path: Path):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    return write


MASKS = np.zeros((2, 426, 640), bool)
MASKS[0, :200] = True
MASKS[1, 200:] = True
BAD_PROPOSALS = [
    (
        "NaN score",
        _npz(masks=MASKS, scores=np.array([0.9, np.nan], np.float32)),
        "score nan of mask 1 is not a finite number",
    ),
    (
        "+Inf score",
        _npz(masks=MASKS, scores=np.array([np.inf, 0.5], np.float32)),
        "score inf of mask 0 is not a finite number",
    ),
    (
        "-Inf score",
        _npz(masks=MASKS, scores=np.array([0.5, -np.inf], np.float32)),
        "score -inf of mask 1 is not a finite number",
    ),
    ("text scores", _npz(masks=MASKS, scores=np.array(["high", "low"])), "'scores' is <U4"),
    ("score count", _npz(masks=MASKS, scores=np.ones(3, np.float32)), "has 3 scores for 2 masks"),
    (
        "masks of another size",
        _npz(masks=np.zeros((2, 100, 100), bool)),
        "has masks of 100×100 but the image is 426×640",
    ),
    ("2-D masks", _npz(masks=np.zeros((426, 640), bool)), "'masks' has shape (426, 640); expected bool N×H×W"),
    ("mask values 0..2", _npz(masks=MASKS.astype(np.uint8) * 2), "'masks' is uint8 with values other than 0/1"),
    (
        "packed of the wrong length",
        _npz(packed=np.zeros(10, np.uint8), shape=np.array([2, 426, 640])),
        "'packed' is uint8 of 10 bytes",
    ),
    ("no masks at all", _npz(scores=np.ones(2, np.float32)), "holds ['scores']; expected 'masks'"),
    ("not a zip", lambda p: p.write_bytes(b"PK\x03\x04 not really"), "is unreadable or corrupt"),
]


@pytest.mark.parametrize("name,write,message", BAD_PROPOSALS, ids=[c[0] for c in BAD_PROPOSALS])
def test_precomputed_proposals_are_checked(capsys, tmp_path, bank, coco_mini, name, write, message):
    root = tmp_path / "proposals"
    root.mkdir()
    path = root / f"{IMAGE_ID}.npz"
    write(path)
    out = tmp_path / "out"
    line = one_error(capsys, [
        "predict", coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg", "--bank", bank, "--out", out,
        "--proposer", "precomputed", "--set", f"proposer.root={root}",
    ])
    assert f"proposal file {path}" in line and message in line
    assert leftovers(out) == []


def test_precomputed_proposal_file_missing(capsys, tmp_path, bank, coco_mini):
    (tmp_path / "proposals").mkdir()
    line = one_error(capsys, [
        "predict", coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg", "--bank", bank, "--out", tmp_path / "out",
        "--proposer", "precomputed", "--set", f"proposer.root={tmp_path / 'proposals'}",
    ])
    assert f"proposal file {tmp_path / 'proposals' / IMAGE_ID}.npz (or {IMAGE_ID}.png) does not exist" in line
    assert leftovers(tmp_path / "out") == []


def test_predict_refuses_a_symlink_loop_and_leaves_nothing(capsys, tmp_path, bank):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    line = one_error(capsys, ["predict", loop, "--bank", bank, "--out", tmp_path / "out"])
    assert str(loop) in line
    assert leftovers(tmp_path / "out") == []


def test_run_with_a_bank_of_another_encoder_leaves_nothing(capsys, tmp_path, bank, coco_mini):
    out = tmp_path / "out"
    line = one_error(capsys, [
        "run", "-c", PRESET, "--set", f"dataset.root={coco_mini}", "--bank", bank, "--set", "encoder.layers=[8]",
        "--set", "eval_limit=2", "--out", out,
    ])
    assert "bank was built with encoder dinov2" in line and "layers: bank [10], run [8]" in line
    assert leftovers(out) == []


def test_a_failed_rerun_puts_back_the_earlier_outputs_marker(capsys, tmp_path, bank, coco_mini):
    """A rerun into an earlier output that stops before writing anything leaves that output as it was:
    its files and its marker byte for byte (still complete, so `evaluate` and reruns read it as before)."""
    out = tmp_path / "out"
    image = coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg"
    assert main(["predict", str(image), "--bank", str(bank), "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(image.read_bytes()[:1000])
    line = one_error(capsys, ["predict", broken, "--bank", bank, "--out", out])
    assert "unreadable or corrupt" in line
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# -- damaged banks --------------------------------------------------------------------------------


def _manifest(edit):
    def damage(bank: Path):
        path = bank / "manifest.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return damage


BAD_BANKS = [
    ("no manifest", lambda b: (b / "manifest.json").unlink(), "manifest.json"),
    ("manifest not JSON", lambda b: (b / "manifest.json").write_text("{oops"), "manifest.json is corrupt"),
    (
        "manifest of something else",
        lambda b: (b / "manifest.json").write_text('{"format": "other"}'),
        "is not a moduseg bank manifest (format 'other')",
    ),
    (
        "newer format",
        _manifest(lambda d: d.update(format_version=99)),
        "has format version 99, newer than this moduseg",
    ),
    ("vectors missing", lambda b: (b / "vectors.npy").unlink(), "is incomplete or corrupt"),
    ("vectors garbage", lambda b: (b / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), "is incomplete or corrupt"),
    ("labels of another length", lambda b: np.save(b / "labels.npy", np.zeros(3, np.int32)), "vectors but 3 labels"),
    ("index missing", lambda b: shutil.rmtree(b / "index"), "index directory (no index.json)"),
    (
        "index manifest garbage",
        lambda b: (b / "index" / "index.json").write_text("garbage"),
        "index.json is unreadable or corrupt",
    ),
]


@pytest.mark.parametrize("name,damage,message", BAD_BANKS, ids=[c[0] for c in BAD_BANKS])
def test_damaged_banks_are_refused(capsys, tmp_path, bank, coco_mini, name, damage, message):
    copy = tmp_path / "bank"
    shutil.copytree(bank, copy)
    damage(copy)
    before = sorted(p.name for p in copy.rglob("*"))
    out = tmp_path / "out"
    line = one_error(capsys, ["predict", coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg", "--bank", copy, "--out", out])
    assert str(copy) in line and message in line
    assert leftovers(out) == []
    assert sorted(p.name for p in copy.rglob("*")) == before  # a bad bank is read, never repaired or removed


def test_bank_built_for_a_gpu_loads_on_this_machine(tmp_path, bank, coco_mini):
    """A manifest written by a CUDA build (index.device=cuda) or a faiss gpu=always build loads here:
    runtime options describe the machine that built the bank, not the bank."""
    from moduseg_core.contract.components import build
    from moduseg_core.contract.config import Choice
    from moduseg_core.pipeline.bank import Bank

    exact = tmp_path / "exact"
    shutil.copytree(bank, exact)
    _manifest(lambda d: d["components"]["index"]["options"].update(device="cuda"))(exact)
    assert (
        main(
            [
                "predict",
                str(coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg"),
                "--bank",
                str(exact),
                "--out",
                str(tmp_path / "o1"),
            ]
        )
        == 0
    )

    pytest.importorskip("faiss")
    loaded = Bank.load(bank)
    index = build("index", Choice(name="faiss"))
    index.component.add(loaded.vectors, loaded.labels)
    manifest = json.loads(json.dumps(loaded.manifest))
    manifest["components"]["index"] = {
        "name": "faiss",
        "options": {"type": "flat", "nlist": None, "nprobe": 32, "gpu": "always"},
    }
    Bank(loaded.vectors, loaded.labels, loaded.class_names, manifest, index.component).save(tmp_path / "faiss")
    reloaded = Bank.load(tmp_path / "faiss")
    assert len(reloaded) == len(loaded)
    np.testing.assert_array_equal(reloaded.index.search(loaded.vectors, 1).labels[:, 0], loaded.labels)
    # and a fresh build records no runtime option at all
    assert "device" not in json.loads((bank / "manifest.json").read_text())["components"]["index"]["options"]


# -- labels files and masks (scored by `evaluate`, which loads no model) -------------------------------


def folder_dataset(tmp_path: Path, *, labels=None, mask_writer=None, n: int = 2) -> tuple[Path, Path]:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    pred = tmp_path / "pred"
    pred.mkdir()
    for k in range(n):
        name = "abcdefgh"[k]
        image = np.zeros((40, 60, 3), np.uint8)
        image[10:30, 10:40] = 200
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        mask = np.zeros((40, 60), np.uint8)
        mask[10:30, 10:40] = 1
        (mask_writer or (lambda p, m: Image.fromarray(m, "L").save(p)))(root / "masks" / f"{name}.png", mask)
        Image.fromarray(mask, "L").save(pred / f"{name}.png")
    if labels is not None:
        filename, content = labels
        target = root / filename
        if callable(content):
            content(target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return root, pred


def _evaluate(root: Path, pred: Path, *extra: str) -> list[str]:
    return ["evaluate", str(pred), "--dataset", "folder", "--set", f"dataset.root={root}", "--split", "all", *extra]


BAD_LABELS = [
    ("json syntax", ("labels.json", "{bad"), "is not valid JSON"),
    (
        "json NaN id",
        ("labels.json", '{"a": [NaN], "b": [1]}'),
        "image 'a' has label nan; class ids must be finite integers",
    ),
    ("json Infinity id", ("labels.json", '{"a": [Infinity], "b": [1]}'), "image 'a' has label inf"),
    ("json list at top", ("labels.json", "[1, 2]"), "holds a list, not a mapping"),
    ("json unknown name", ("labels.json", '{"a": ["zebra"], "b": [1]}'), "image 'a' has class name 'zebra'"),
    ("json id out of range", ("labels.json", '{"a": [7], "b": [1]}'), "image 'a' has class id 7, outside 1..2"),
    ("json background id", ("labels.json", '{"a": [0], "b": [1]}'), "background is implicit"),
    ("json fractional id", ("labels.json", '{"a": [1.5], "b": [1]}'), "image 'a' has label 1.5"),
    ("json null labels", ("labels.json", '{"a": null, "b": [1]}'), "image 'a' has labels None"),
    ("json missing image", ("labels.json", '{"a": [1]}'), "has no entry for image 'b'"),
    ("json not UTF-8", ("labels.json", b'{"a": ["\xe9"], "b": [1]}'), "is not valid JSON"),
    ("csv extra field", ("labels.csv", "id,labels\na,cat,dog\nb,dog\n"), "line 2 has 3 fields"),
    ("csv not UTF-8", ("labels.csv", b"a,\xe9\nb,dog\n"), "is not UTF-8 text"),
    ("csv unknown name", ("labels.csv", "a,zebra\nb,dog\n"), "image 'a' has class name 'zebra'"),
    ("npy garbage", ("labels.npy", b"garbage"), "is not a readable .npy file"),
    ("npy array, not a dict", ("labels.npy", lambda p: np.save(p, np.zeros(3))), "holds a ndarray, not a mapping"),
    (
        "npy NaN multi-hot",
        ("labels.npy", lambda p: np.save(p, {"a": np.array([np.nan, 0.0]), "b": np.array([0.0, 1.0])})),
        "has label nan",
    ),
    ("wrong suffix", ("labels.txt", "a 1\nb 2\n"), "has suffix '.txt'"),
]


@pytest.mark.parametrize("name,labels,message", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_malformed_labels_files(capsys, tmp_path, name, labels, message):
    root, pred = folder_dataset(tmp_path, labels=labels)
    line = one_error(capsys, _evaluate(root, pred, "--set", f"dataset.labels_file={labels[0]}"))
    assert f"labels file {root / labels[0]}" in line and message in line


BAD_GT_MASKS = [
    ("RGB colour mask", lambda p, m: Image.fromarray(np.stack([m * 128] * 3, -1)).save(p), "has mode RGB"),
    ("JPEG mask", lambda p, m: Image.fromarray(m, "L").save(p, format="JPEG"), "is a JPEG file"),
    ("class id 9 of 3 classes", lambda p, m: Image.fromarray(m * 9, "L").save(p), "holds class id 9, outside 0..2"),
    ("16-bit id 1000", lambda p, m: Image.fromarray(m.astype(np.uint16) * 1000).save(p), "holds class id 1000"),
    ("corrupt", lambda p, m: p.write_bytes(b"\x89PNG\r\n\x1a\nxxxx"), "is unreadable or corrupt"),
    ("empty", lambda p, m: p.write_bytes(b""), "is unreadable or corrupt"),
]


@pytest.mark.parametrize("name,writer,message", BAD_GT_MASKS, ids=[c[0] for c in BAD_GT_MASKS])
def test_bad_ground_truth_masks(capsys, tmp_path, name, writer, message):
    root, pred = folder_dataset(tmp_path, mask_writer=writer, labels=("labels.json", '{"a": [1], "b": [1]}'))
    out = tmp_path / "scores"
    line = one_error(capsys, _evaluate(root, pred, "--out", str(out)))
    assert f"mask {root / 'masks' / 'a.png'}" in line and message in line
    assert leftovers(out) == []


def test_prediction_of_another_size_names_both_files(capsys, tmp_path):
    root, pred = folder_dataset(tmp_path)
    Image.fromarray(np.zeros((20, 60), np.uint8), "L").save(pred / "a.png")
    out = tmp_path / "deep" / "scores"  # two folders the command would create: neither stays
    line = one_error(capsys, _evaluate(root, pred, "--out", str(out)))
    assert f"mask {pred / 'a.png'} is 20×60 but its ground truth {root / 'masks' / 'a.png'} is 40×60" in line
    assert not (tmp_path / "deep").exists()


def test_limit_reads_only_the_masks_it_uses(capsys, tmp_path):
    """Labels derived from masks: with a limit, masks past it are never read (here the last is corrupt)."""
    root, pred = folder_dataset(tmp_path, n=4)
    (root / "masks" / "d.png").write_bytes(b"")
    assert main(_evaluate(root, pred, "--set", "eval_limit=3")) == 0
    capsys.readouterr()
    line = one_error(capsys, _evaluate(root, pred))
    assert f"mask {root / 'masks' / 'd.png'} is unreadable or corrupt" in line


def test_limit_fingerprint_covers_the_samples_used(tmp_path):
    from moduseg_core.contract.config import RunConfig
    from moduseg_core.pipeline.runner import dataset_info, open_dataset

    root, _ = folder_dataset(tmp_path, n=4)
    (root / "masks" / "d.png").write_bytes(b"")
    config = RunConfig.model_validate({"dataset": {"name": "folder", "options": {"root": str(root)}}})
    dataset, samples = open_dataset(config, "all", 2)
    assert [s.id for s in samples] == ["a", "b"] and samples[0].labels == (1,)
    info = dataset_info(dataset, samples)
    assert info["images"] == 2
    # the fingerprint is of the samples used: the two read, not the split (whose fourth mask is corrupt)
    component = dataset.component
    assert info["fingerprint"] == component.fingerprint(samples) != component.fingerprint(samples[:1])
    assert dataset_info(dataset, samples)["fingerprint"] == info["fingerprint"]  # stable


def test_debug_shows_the_chained_cause(tmp_path):
    root, pred = folder_dataset(tmp_path, mask_writer=lambda p, m: p.write_bytes(b"not a png"))
    env = {k: v for k, v in os.environ.items() if k != "MODUSEG_LOAD_PLUGINS"} | {"MODUSEG_PROGRESS": "0"}
    argv = [
        sys.executable,
        "-c",
        "import sys; from moduseg_core.cli import main; sys.exit(main(sys.argv[1:]))",
        *_evaluate(root, pred),
    ]
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    loud = subprocess.run(argv, capture_output=True, text=True, env=env | {"MODUSEG_DEBUG": "1"}, cwd=ROOT)
    assert "The above exception was the direct cause of the following exception" in loud.stderr
    assert "UnidentifiedImageError" in loud.stderr and "ModusegError" in loud.stderr


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes (add_note) are Python 3.11+")
def test_debug_chain_survives_the_loader_workers(tmp_path, bank, coco_mini):
    """Several images with torch loaded: decoding runs in DataLoader worker processes, whose
    exceptions lose ``__cause__`` when pickled; the cause's traceback still reaches MODUSEG_DEBUG=1."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(coco_mini / "JPEGImages" / f"{IMAGE_ID}.jpg", inputs / "a.jpg")
    (inputs / "b.jpg").write_bytes(b"junk")
    env = {k: v for k, v in os.environ.items() if k != "MODUSEG_LOAD_PLUGINS"} | {
        "MODUSEG_PROGRESS": "0",
        "MODUSEG_DEBUG": "1",
    }
    argv = [sys.executable, "-c", "import sys; from moduseg_core.cli import main; sys.exit(main(sys.argv[1:]))",
            "predict", str(inputs), "--bank", str(bank), "--out", str(tmp_path / "out")]
    loud = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert f"ModusegError: image {inputs / 'b.jpg'} is unreadable or corrupt" in loud.stderr
    assert "caused by (in a loader worker)" in loud.stderr and "UnidentifiedImageError" in loud.stderr


# -- smaller defects ------------------------------------------------------------------------------


def test_hnswlib_says_when_it_searches_exactly(caplog):
    pytest.importorskip("hnswlib")
    from moduseg_core.contract.plugins import get_component, get_spec

    rng = np.random.default_rng(3)
    bank = rng.standard_normal((600, 8)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    index = get_component("index", "hnswlib", M=2, ef_construction=1, ef=1)
    index.add(bank, np.arange(600) % 5)
    with caplog.at_level(logging.WARNING, logger="moduseg"):
        for _ in range(3):
            result = index.search(bank[:10], 599)
    fallbacks = [r for r in caplog.records if "searching exactly" in r.getMessage()]
    assert len(fallbacks) == 1 and index.exact_fallbacks == 3  # said once, counted every time
    assert "exact_fallbacks=3" in repr(index)
    expected = np.sort(bank[:10] @ bank.T, axis=1)[:, ::-1][:, :599]
    np.testing.assert_allclose(result.similarities, expected, atol=2e-6)
    assert "brute force" in get_spec("index", "hnswlib").summary


@pytest.mark.parametrize(
    "content,outcome",
    [
        (None, {}),
        ('{"image_mean": [0.5, 0.5, 0.5]}', {"image_mean": [0.5, 0.5, 0.5]}),
        ("{not json", "is unreadable"),
        ("[1, 2, 3]", "holds a list, not a mapping"),
        (b"\xff\xfe\x00", "is unreadable"),
    ],
    ids=["absent", "valid", "malformed", "a list", "not UTF-8"],
)
def test_preprocessor_config_only_absence_falls_back(tmp_path, content, outcome):
    pytest.importorskip("torch")
    from moduseg_builtins.proposers._universal_impl import processor_settings

    from moduseg_core import ModusegError

    if content is not None:
        path = tmp_path / "preprocessor_config.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if isinstance(outcome, dict):
        assert processor_settings(str(tmp_path), True) == outcome
    else:
        with pytest.raises(ModusegError, match=outcome) as info:
            processor_settings(str(tmp_path), True)
        assert str(tmp_path / "preprocessor_config.json") in str(info.value)


def test_a_device_this_machine_lacks_is_refused_before_the_output_folder(capsys, tmp_path, coco_mini):
    """`--set encoder.device=cuda` without a GPU: one line, and neither the run folder nor its bank's shard store
    (``bank/shards/settings.json``) is written: the device is checked before any work."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "out"
    line = one_error(capsys, [
        "run", "-c", PRESET, "--set", f"dataset.root={coco_mini}", "--set", "encoder.device=cuda",
        "--set", "bank_limit=2", "--set", "eval_limit=2", "--out", out,
    ])
    assert "cuda" in line and "encoder" in line
    assert leftovers(out) == []

"""A corpus of bad input: output folders, command-line usage, configs, banks, labels, inputs.

Every case must end with exit code 2 and exactly one line on stderr, ``Error: ...``, that names the
bad value; and the folder the case works in must be exactly as it was (nothing written, nothing
deleted). Each case fails before any model loads, so the corpus runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moduseg_core.cli import main
from moduseg_core.files.outputs import MARKER, _process_start

PRESET = str(Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml")


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a hash of its content (folders and links marked as such)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def marker(folder: Path, command: str, state: str = "complete", files=(), **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": "moduseg-output", "command": command, "state": state, "files": list(files), **extra}
    (folder / MARKER).write_text(json.dumps(data))
    return folder


def tiny_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path)
    return path


def fake_bank(folder: Path, manifest: dict | str | None = None, vectors: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if vectors:
        np.save(folder / "vectors.npy", np.zeros((2, 4), np.float32))
    return folder


GOOD_MANIFEST = {"format": "moduseg-bank", "format_version": 1, "class_names": ["background", "a"],
                 "components": {"index": {"name": "exact", "options": {}}}}


# Each case: (id, setup(tmp, coco) -> argv, words the error line must contain)
Case = tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]


def _ds(coco: Path) -> list[str]:
    return ["-c", PRESET, "--set", f"dataset.root={coco}"]


def _file(tmp: Path, name: str = "afile.txt") -> Path:
    path = tmp / name
    path.write_text("not a folder\n")
    return path


def _foreign(tmp: Path) -> Path:
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my thesis\n")
    return folder


def _in_use(tmp: Path) -> Path:
    pid = os.getppid()  # a live process on this machine that is not this one
    return marker(tmp / "busy", "run", "incomplete", pid=pid, host=socket.gethostname(), process=_process_start(pid))


def _unwritable(tmp: Path) -> Path:
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


CASES: list[Case] = [
    # ---- output folders -------------------------------------------------------------------------
    ("out-file-run", lambda t, c: ["run", *_ds(c), "--out", str(_file(t))], ("afile.txt", "is a file")),
    ("out-file-build-bank", lambda t, c: ["build-bank", *_ds(c), "--out", str(_file(t))], ("afile.txt", "is a file")),
    (
        "out-file-predict",
        lambda t, c: ["predict", str(tiny_png(t / "in" / "a.png")), "--bank", str(t / "b"), "--out", str(_file(t))],
        ("afile.txt", "is a file"),
    ),
    (
        "out-file-ablate",
        lambda t, c: ["ablate", *_ds(c), "--grid", "method.top_k=1,5", "--out", str(_file(t))],
        ("afile.txt", "is a file"),
    ),
    (
        "out-file-evaluate-labels",
        lambda t, c: ["evaluate-labels", *_ds(c), "--out", str(_file(t))],
        ("afile.txt", "is a file"),
    ),
    ("out-file-bench", lambda t, c: ["bench", "--data", str(c), "--out", str(_file(t))], ("afile.txt", "is a file")),
    ("out-file-demo", lambda t, c: ["demo", "--data", str(c), "--out", str(_file(t))], ("afile.txt", "is a file")),
    ("out-under-a-file", lambda t, c: ["run", *_ds(c), "--out", str(_file(t) / "sub")], ("afile.txt", "is a file")),
    ("out-broken-link", lambda t, c: ["run", *_ds(c), "--out", str(_link(t))], ("dangling", "broken link")),
    (
        "out-foreign-run",
        lambda t, c: ["run", *_ds(c), "--out", str(_foreign(t))],
        ("mine", "notes.txt", "not written by moduseg"),
    ),
    (
        "out-foreign-build-bank",
        lambda t, c: ["build-bank", *_ds(c), "--out", str(_foreign(t))],
        ("mine", "not written by moduseg"),
    ),
    (
        "out-foreign-overwrite",
        lambda t, c: ["build-bank", *_ds(c), "--out", str(_foreign(t)), "--overwrite"],
        ("mine", "never replaces"),
    ),
    (
        "out-foreign-predict",
        lambda t, c: ["predict", str(tiny_png(t / "in" / "a.png")), "--bank", str(t / "b"), "--out", str(_foreign(t))],
        ("mine", "not written by moduseg"),
    ),
    (
        "out-foreign-ablate",
        lambda t, c: ["ablate", *_ds(c), "--grid", "method.top_k=1,5", "--out", str(_foreign(t))],
        ("mine", "not written by moduseg"),
    ),
    (
        "out-bank-as-run",
        lambda t, c: ["run", *_ds(c), "--out", str(marker(t / "bank", "build-bank", files=["vectors.npy"]))],
        ("bank", "moduseg build-bank", "--overwrite"),
    ),
    (
        "out-run-as-predict",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(t / "b"),
            "--out",
            str(marker(t / "r", "run")),
        ],
        ("moduseg run", "moduseg predict"),
    ),
    (
        "out-run-as-ablate",
        lambda t, c: ["ablate", *_ds(c), "--grid", "method.top_k=1,5", "--out", str(marker(t / "r", "run"))],
        ("moduseg run", "moduseg ablate"),
    ),
    (
        "out-predict-as-bank",
        lambda t, c: ["build-bank", *_ds(c), "--out", str(marker(t / "p", "predict"))],
        ("moduseg predict", "--overwrite"),
    ),
    ("out-damaged-marker", lambda t, c: ["run", *_ds(c), "--out", str(_damaged(t))], ("dmg", "damaged")),
    (
        "out-in-use",
        lambda t, c: ["run", *_ds(c), "--out", str(_in_use(t))],
        ("busy", "being written", str(os.getppid())),
    ),
    ("out-not-writable", lambda t, c: ["run", *_ds(c), "--out", str(_unwritable(t))], ("ro", "not writable")),
    (
        "run-bank-is-out",
        lambda t, c: ["run", *_ds(c), "--bank", str(t / "same"), "--out", str(t / "same")],
        ("same", "is the --out folder"),
    ),
    (
        "predict-bank-is-out",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(t / "same"),
            "--out",
            str(t / "same"),
        ],
        ("same", "is the --out folder"),
    ),
    (
        "evaluate-interrupted-run",
        lambda t, c: ["evaluate", str(_interrupted_run(t)), *_ds(c)],
        ("killed", "interrupted"),
    ),
    # ---- command-line usage ---------------------------------------------------------------------
    ("usage-unknown-flag", lambda t, c: ["run", "--bogus"], ("--bogus",)),
    ("usage-misspelt-flag", lambda t, c: ["run", "--ou", "x"], ("--ou", "--out")),
    ("usage-unknown-flag-build-bank", lambda t, c: ["build-bank", "--nope", "1"], ("--nope",)),
    ("usage-missing-argument", lambda t, c: ["predict"], ("nput",)),
    ("usage-missing-bank", lambda t, c: ["predict", str(tiny_png(t / "in" / "a.png"))], ("--bank",)),
    ("usage-unknown-command", lambda t, c: ["nocmd"], ("nocmd",)),
    ("usage-misspelt-command", lambda t, c: ["rn"], ("rn", "run")),
    ("usage-option-without-value", lambda t, c: ["run", "--out"], ("--out",)),
    ("usage-set-without-value", lambda t, c: ["run", "--set"], ("--set",)),
    ("usage-bad-int", lambda t, c: ["bench", "--images", "x"], ("--images",)),
    ("usage-int-below-min", lambda t, c: ["bench", "--images", "0"], ("--images",)),
    ("usage-bad-choice", lambda t, c: ["run", "--on-error", "maybe"], ("--on-error", "maybe")),
    ("usage-bad-float", lambda t, c: ["cache", "prune", "--older-than", "abc"], ("--older-than",)),
    ("usage-missing-name", lambda t, c: ["plugins", "show"], ("name",)),
    ("usage-limit-zero", lambda t, c: ["evaluate-labels", "--limit", "0"], ("--limit",)),
    ("usage-grid-without-value", lambda t, c: ["ablate", "--grid"], ("--grid",)),
    ("usage-evaluate-missing-folder", lambda t, c: ["evaluate"], ("redictions",)),
    (
        "usage-save-masks-without-out",
        lambda t, c: ["evaluate-labels", *_ds(c), "--save-masks"],
        ("--save-masks", "--out"),
    ),
    # ---- configs --------------------------------------------------------------------------------
    ("set-bank-limit-negative", lambda t, c: ["run", "--set", "bank_limit=-1"], ("bank_limit=-1", "≥ 1")),
    ("set-eval-limit-text", lambda t, c: ["run", "--set", "eval_limit=abc"], ("eval_limit='abc'",)),
    ("set-on-error-bad", lambda t, c: ["run", "--set", "on_error=maybe"], ("on_error='maybe'", "'fail' or 'skip'")),
    ("set-overlays-bad", lambda t, c: ["run", "--set", "overlays=maybe"], ("overlays='maybe'", "bool")),
    ("set-top-k-zero", lambda t, c: ["run", "--set", "method.top_k=0"], ("top_k=0", "≥ 1")),
    ("set-filter-ratio-high", lambda t, c: ["run", "--set", "method.filter_ratio=2"], ("filter_ratio=2", "< 1.0")),
    ("set-nms-iou-zero", lambda t, c: ["run", "--set", "method.nms_iou=0"], ("nms_iou=0",)),
    ("set-not-key-value", lambda t, c: ["run", "--set", "topk"], ("'topk'", "KEY=VALUE")),
    ("set-unknown-method-key", lambda t, c: ["run", "--set", "method.topk=3"], ("topk", "top_k")),
    ("set-unknown-key", lambda t, c: ["run", "--set", "nothing.x=1"], ("nothing.x",)),
    ("set-component-option-type", lambda t, c: ["run", "--set", "purifier.iterations=lots"], ("iterations='lots'",)),
    (
        "set-component-option-unknown",
        lambda t, c: ["run", "--set", "proposer.n_segment=5"],
        ("n_segment", "n_segments"),
    ),
    ("unknown-component", lambda t, c: ["run", "--proposer", "slik"], ("slik", "slic")),
    ("unknown-encoder", lambda t, c: ["build-bank", "--encoder", "dinov3x"], ("dinov3x",)),
    ("config-missing", lambda t, c: ["run", "-c", str(t / "nope.yaml")], ("nope.yaml", "does not exist")),
    (
        "config-is-folder",
        lambda t, c: ["run", "-c", str(_write(t / "conf.d" / "x", "").parent)],
        ("conf.d", "is a folder"),
    ),
    (
        "config-bad-yaml",
        lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "proposer: [slic\n"))],
        ("c.yaml", "not valid YAML"),
    ),
    ("config-not-mapping", lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "- a\n- b\n"))], ("c.yaml", "mapping")),
    ("config-unknown-key", lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "top_k: 3\n"))], ("top_k",)),
    (
        "config-bad-limit",
        lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "bank_limit: 0\n"))],
        ("bank_limit=0", "≥ 1"),
    ),
    ("config-bad-component", lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "proposer: 5\n"))], ("proposer=5",)),
    ("config-bad-method", lambda t, c: ["run", "-c", str(_write(t / "c.yaml", "method: {top_k: x}\n"))], ("top_k",)),
    ("sweep-unknown-key", lambda t, c: ["ablate", str(_write(t / "s.yaml", "grids: {}\n"))], ("grids", "grid")),
    (
        "sweep-empty-axis",
        lambda t, c: ["ablate", str(_write(t / "s.yaml", "grid: {method.top_k: []}\n"))],
        ("method.top_k",),
    ),
    # ---- banks ----------------------------------------------------------------------------------
    (
        "bank-missing",
        lambda t, c: ["predict", str(tiny_png(t / "in" / "a.png")), "--bank", str(t / "nobank"), "--out", str(t / "o")],
        ("nobank", "not a moduseg bank"),
    ),
    (
        "bank-no-manifest",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", None, vectors=False)),
            "--out",
            str(t / "o"),
        ],
        ("no manifest.json",),
    ),
    (
        "bank-interrupted",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", None)),
            "--out",
            str(t / "o"),
        ],
        ("incomplete", "interrupted"),
    ),
    (
        "bank-corrupt-manifest",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", "{not json")),
            "--out",
            str(t / "o"),
        ],
        ("manifest.json", "corrupt"),
    ),
    (
        "bank-foreign-manifest",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", {"format": "other"})),
            "--out",
            str(t / "o"),
        ],
        ("'other'",),
    ),
    (
        "bank-newer-format",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", {**GOOD_MANIFEST, "format_version": 99})),
            "--out",
            str(t / "o"),
        ],
        ("format version 99",),
    ),
    (
        "bank-missing-vectors",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(fake_bank(t / "b", GOOD_MANIFEST, vectors=False)),
            "--out",
            str(t / "o"),
        ],
        ("vectors.npy",),
    ),
    (
        "bank-is-a-file",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "in" / "a.png")),
            "--bank",
            str(_file(t, "bankfile")),
            "--out",
            str(t / "o"),
        ],
        ("bankfile",),
    ),
    # ---- labels and datasets --------------------------------------------------------------------
    (
        "labels-file-missing",
        lambda t, c: ["evaluate-labels", *_ds(c), "--set", "dataset.labels_file=nope.json"],
        ("nope.json",),
    ),
    (
        "labels-file-corrupt",
        lambda t, c: ["evaluate-labels", *_ds(c), "--set", f"dataset.labels_file={_write(t / 'l.json', '{oops')}"],
        ("l.json",),
    ),
    (
        "dataset-root-missing",
        lambda t, c: ["run", "--set", f"dataset.root={t / 'nowhere'}", "--out", str(t / "o")],
        ("nowhere",),
    ),
    (
        "dataset-bad-split",
        lambda t, c: ["evaluate-labels", *_ds(c), "--set", "bank_split=nosuchsplit"],
        ("nosuchsplit",),
    ),
    ("dataset-unknown-option", lambda t, c: ["run", *_ds(c), "--set", "dataset.mask_dirr=x"], ("mask_dirr",)),
    # ---- inputs ---------------------------------------------------------------------------------
    (
        "input-missing",
        lambda t, c: ["predict", str(t / "ghost.jpg"), "--bank", str(t / "b"), "--out", str(t / "o")],
        ("ghost.jpg",),
    ),
    (
        "input-folder-without-images",
        lambda t, c: [
            "predict",
            str(_write(t / "docs" / "a.txt", "x").parent),
            "--bank",
            str(t / "b"),
            "--out",
            str(t / "o"),
        ],
        ("docs", "no images"),
    ),
    (
        "input-duplicate-names",
        lambda t, c: [
            "predict",
            str(tiny_png(t / "a" / "x.png")),
            str(tiny_png(t / "b" / "x.png")),
            "--bank",
            str(t / "b"),
            "--out",
            str(t / "o"),
        ],
        ("'x'",),
    ),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _link(tmp: Path) -> Path:
    link = tmp / "dangling"
    link.symlink_to(tmp / "gone")
    return link


def _damaged(tmp: Path) -> Path:
    folder = tmp / "dmg"
    folder.mkdir()
    (folder / MARKER).write_text("{half a marker")
    (folder / "report.json").write_text("{}")
    return folder


def _interrupted_run(tmp: Path) -> Path:
    folder = marker(tmp / "killed", "run", "incomplete", files=["predictions/a.png"], pid=1, host="elsewhere")
    tiny_png(folder / "predictions" / "a.png")
    return folder / "predictions"


@pytest.mark.parametrize("name,setup,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, setup, words, tmp_path, coco_mini, capsys, monkeypatch):
    if name == "out-not-writable" and os.geteuid() == 0:
        pytest.skip("root writes anywhere: permissions cannot make a folder unwritable")
    monkeypatch.setenv("MODUSEG_CACHE", str(tmp_path / "cache"))  # ablate's default cache stays in the case
    work = tmp_path / "work"
    work.mkdir()
    argv = setup(work, coco_mini)
    before = snapshot(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for word in words:  # (click of one version says 'inputs', of another 'INPUTS...')
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert snapshot(tmp_path) == before, "the case wrote or deleted something"


def test_corpus_size():
    assert len(CASES) >= 70

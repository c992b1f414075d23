"""Output folders (``moduseg_core.files.outputs``), the bank's save, ``on_error: skip`` and progress bars."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.contract.errors import ModusegError
from moduseg_core.contract.types import Sample
from moduseg_core.files.failures import EXIT_SKIPPED, ErrorLog
from moduseg_core.files.io import write_json, write_text
from moduseg_core.files.outputs import MARKER, OutputDir, _process_start, read_marker
from moduseg_core.files.progress import Bar, close_all, progress
from moduseg_core.pipeline.bank import Bank

PRESET = str(Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml")


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- OutputDir --------------------------------------------------------------------------------------


def test_new_folder_is_marked_incomplete_then_complete_with_what_was_written(tmp_path):
    out = OutputDir(tmp_path / "o", "run")
    out.check()
    assert not (tmp_path / "o").exists(), "check writes nothing"
    out.begin(["report.json", "predictions/a.png", "predictions/b.png"])
    marker = read_marker(tmp_path / "o")
    assert marker["state"] == "incomplete" and marker["pid"] == os.getpid()
    assert marker["files"] == ["predictions/a.png", "predictions/b.png", "report.json"]
    write_json(tmp_path / "o" / "report.json", {})
    write_text(tmp_path / "o" / "predictions" / "a.png", "x")
    out.finish()
    assert read_marker(tmp_path / "o") == {"format": "moduseg-output", "command": "run", "state": "complete",
                                            "files": ["predictions/a.png", "report.json"]}


def _previous(folder: Path, command: str, written: list[str]) -> None:
    out = OutputDir(folder, command)
    out.begin(written)
    for rel in written:
        write_text(folder / rel / "x" if rel.endswith("/") else folder / rel, rel)
    out.finish()


def test_a_failed_command_that_wrote_nothing_leaves_no_folder(tmp_path):
    out = OutputDir(tmp_path / "a" / "b" / "o", "run")
    out.begin(["report.json"])
    assert read_marker(tmp_path / "a" / "b" / "o")["state"] == "incomplete"
    out.abandon()
    assert list(tmp_path.iterdir()) == [], "the three folders begin() created are gone"
    out.abandon()  # twice is harmless


def test_abandon_keeps_a_folder_someone_else_wrote_into_and_one_that_existed(tmp_path):
    existing = tmp_path / "empty"
    existing.mkdir()
    out = OutputDir(existing / "o", "predict")
    out.begin(["x.png"])
    (existing / "o" / "notes.txt").write_text("mine")  # a user's file, not written by the command
    out.abandon()
    assert files(tmp_path) == ["empty/o/notes.txt"], "the marker goes, the user's file and its folder stay"


def test_abandon_after_a_write_keeps_the_work_and_its_incomplete_marker(tmp_path):
    out = OutputDir(tmp_path / "o", "build-bank")
    out.begin(["shards/"])
    write_text(tmp_path / "o" / "shards" / "0.shard", "done")
    out.abandon()
    assert files(tmp_path / "o") == [MARKER, "shards/0.shard"]
    assert read_marker(tmp_path / "o")["state"] == "incomplete", "a rerun resumes or replaces it"


def test_a_failed_rerun_puts_the_earlier_marker_back_byte_for_byte(tmp_path):
    first = OutputDir(tmp_path / "o", "run")
    first.begin(["report.json"])
    write_text(tmp_path / "o" / "report.json", "{}")
    first.finish()
    before = (tmp_path / "o" / MARKER).read_bytes()
    with pytest.raises(RuntimeError), OutputDir(tmp_path / "o", "run") as again:
        again.begin(["report.json", "predictions/a.png"])
        raise RuntimeError("a component failed")
    assert (tmp_path / "o" / MARKER).read_bytes() == before and files(tmp_path / "o") == [MARKER, "report.json"]


def test_the_error_boundary_abandons_what_a_command_began(tmp_path):
    from moduseg_core.files.outputs import abandon_open

    outs = [OutputDir(tmp_path / name, "run") for name in ("x", "y")]
    for out in outs:
        out.begin()
    abandon_open()
    assert list(tmp_path.iterdir()) == []


def test_rerun_removes_its_stale_files_and_keeps_the_users(tmp_path):
    folder = tmp_path / "o"
    _previous(folder, "run", ["report.json", "predictions/a.png", "predictions/b.png", "errors.jsonl"])
    (folder / "predictions" / "mine.png").write_text("the user's")
    (folder / "notes.txt").write_text("the user's")
    out = OutputDir(folder, "run")
    out.check()
    out.begin(["report.json", "predictions/a.png", "errors.jsonl"])
    write_json(folder / "report.json", {})
    write_text(folder / "predictions" / "a.png", "new")
    out.finish()
    assert files(folder) == [MARKER, "notes.txt", "predictions/a.png", "predictions/mine.png", "report.json"]


def test_demo_and_run_share_a_folder_but_other_commands_need_overwrite(tmp_path):
    folder = tmp_path / "o"
    _previous(folder, "build-bank", ["manifest.json", "vectors.npy"])
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ModusegError, match="holds the output of `moduseg build-bank`"):
        OutputDir(folder, "run").check()
    out = OutputDir(folder, "run", overwrite=True)
    out.check()
    out.begin(["report.json"])
    assert files(folder) == [MARKER, "notes.txt"], "--overwrite removed exactly the bank's files"
    write_json(folder / "report.json", {})
    out.finish()
    OutputDir(folder, "demo").check()  # a demo may rerun into a run's folder


def test_foreign_folder_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(ModusegError, match="not written by moduseg"):
            OutputDir(tmp_path / "o", "build-bank", overwrite=overwrite).check()
    assert (tmp_path / "o" / "thesis.tex").read_text() == "years of work"


def test_killed_writers_temporaries_are_removed_by_the_next_run(tmp_path):
    folder = tmp_path / "o"
    _previous(folder, "run", ["report.json", "predictions/a.png", "bank/"])
    stale = [folder / ".report.json.4242-abcd1234.tmp", folder / "predictions" / ".a.png.4242-00000000.tmp",
             folder / f".{MARKER}.4242-ffffffff.tmp", folder / "bank" / "index" / ".vectors.npy.7-aa.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (folder / "bank" / ".bank_save.4242-12345678.tmp").mkdir()
    (folder / ".notes.tmp").write_text("a user's hidden file that merely looks temporary")
    OutputDir(folder, "run").begin(["report.json", "predictions/a.png", "bank/"])
    assert not any(p.exists() for p in stale) and not (folder / "bank" / ".bank_save.4242-12345678.tmp").exists()
    assert (folder / ".notes.tmp").exists()


def test_a_live_writer_holds_the_folder_but_a_reused_process_id_does_not(tmp_path):
    pid = os.getppid()
    folder = tmp_path / "o"
    folder.mkdir()
    held = {"format": "moduseg-output", "command": "run", "state": "incomplete", "files": [], "pid": pid,
            "host": socket.gethostname(), "process": _process_start(pid)}
    (folder / MARKER).write_text(json.dumps(held))
    with pytest.raises(ModusegError, match=f"being written by moduseg process {pid}"):
        OutputDir(folder, "run").check()
    if _process_start(pid) is not None:  # the id now names another process: the writer is gone
        (folder / MARKER).write_text(json.dumps({**held, "process": "1"}))
        OutputDir(folder, "run").check()


def test_marker_entries_cannot_point_outside_the_folder(tmp_path):
    folder = tmp_path / "o"
    (tmp_path / "precious.txt").write_text("keep")
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({"format": "moduseg-output", "command": "run", "state": "complete",
                                             "files": ["../precious.txt", "/etc/hostname", "ok.txt"]}))
    out = OutputDir(folder, "run", overwrite=True)
    out.begin([])
    out.finish()
    assert (tmp_path / "precious.txt").read_text() == "keep"


# -- Bank.save --------------------------------------------------------------------------------------


class _Index:
    def save(self, directory: Path) -> None:
        assert directory.is_dir() and not any(directory.iterdir()), "save() gets an existing, empty folder"
        (directory / "index.json").write_text("{}")


def _bank() -> Bank:
    manifest = {"format": "moduseg-bank", "format_version": 1, "class_names": ["background", "a"]}
    return Bank(np.eye(2, 4, dtype=np.float32), np.array([0, 1], np.int32), ["background", "a"], manifest, _Index())


def test_bank_save_touches_only_the_banks_files(tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's")
    (folder / ".bank_save.999999999-dead.tmp").mkdir()  # left by a killed save
    _bank().save(folder)
    _bank().save(folder)
    assert files(folder) == ["index/index.json", "labels.npy", "manifest.json", "notes.txt", "vectors.npy"]
    assert not list(folder.glob(".bank_save.*"))


def test_bank_save_refuses_a_foreign_manifest_or_index(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text('{"name": "my package"}')
    with pytest.raises(ModusegError, match="not a moduseg bank's"):
        _bank().save(tmp_path / "a")
    (tmp_path / "b" / "index").mkdir(parents=True)
    (tmp_path / "b" / "index" / "my.db").write_text("x")
    with pytest.raises(ModusegError, match="index/ is not a moduseg index"):
        _bank().save(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.json").read_text() == '{"name": "my package"}'
    assert (tmp_path / "b" / "index" / "my.db").exists()


# -- on_error ---------------------------------------------------------------------------------------


def test_error_log_fail_reraises_and_skip_buffers_until_opened(tmp_path):
    sample = Sample(id="x", image_path=tmp_path / "x.jpg")
    with pytest.raises(ValueError):
        ErrorLog("fail").add(sample, "read", ValueError("bad"))
    log = ErrorLog("skip")
    log.context = {"split": "train"}
    log.add(sample, "read", ValueError("bad\nbytes"))
    assert not (tmp_path / "errors.jsonl").exists()
    log.open(tmp_path)
    log.add(Sample(id="y", image_path=tmp_path / "y.jpg"), "label", ModusegError("no labels"))
    rows = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert rows == [
        {
            "image": "x",
            "path": str(tmp_path / "x.jpg"),
            "split": "train",
            "stage": "read",
            "error": "ValueError",
            "reason": "ValueError: bad bytes",
        },
        {
            "image": "y",
            "path": str(tmp_path / "y.jpg"),
            "split": "train",
            "stage": "label",
            "error": "ModusegError",
            "reason": "no labels",
        },
    ]
    with pytest.raises(ModusegError, match="all 2 images failed"):
        log.check_some_succeeded(2)


def _tiny(root: Path) -> list[str]:
    return [
        "-c",
        PRESET,
        "--set",
        f"dataset.root={root}",
        "--set",
        "encoder.resize=224",
        "--set",
        "proposer.n_segments=[20]",
    ]


@pytest.mark.slow
def test_run_skip_logs_counts_and_exits_3(broken_voc, tmp_path, capsys):
    root, bad_bank, bad_eval = broken_voc
    out = tmp_path / "run"
    assert main(["run", *_tiny(root), "--out", str(out)]) == 2, "on_error defaults to fail"
    assert f"{bad_bank}.jpg" in capsys.readouterr().err.splitlines()[-1]
    # no result is half-written: the folder holds the bank's resumable store (OUT/bank/shards/, what the rerun
    # below resumes) under a marker that says incomplete, and nothing else
    assert read_marker(out)["state"] == "incomplete"
    assert {p.name for p in out.iterdir()} <= {MARKER, "bank"} and not (out / "bank" / "manifest.json").exists()
    assert main(["run", *_tiny(root), "--on-error", "skip", "--out", str(out)]) == EXIT_SKIPPED
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(r["image"], r["split"], r["stage"]) for r in rows] == [
        (bad_bank, "train", "read"),
        (bad_eval, "val", "read"),
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == {"bank": 1, "eval": 1, "log": "errors.jsonl"}
    assert report["masks"]["images"] == 3
    assert not (out / "predictions" / f"{bad_eval}.png").exists()
    assert "Skipped images" in (out / "report.md").read_text()
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.slow
def test_build_bank_and_predict_skip(broken_voc, tmp_path, capsys, monkeypatch):
    root, bad_bank, bad_eval = broken_voc
    bank = tmp_path / "bank"
    assert main(["build-bank", *_tiny(root), "--set", "on_error=skip", "--out", str(bank)]) == EXIT_SKIPPED
    manifest = json.loads((bank / "manifest.json").read_text())
    assert manifest["counts"]["skipped_images"] == 1 and manifest["counts"]["images"] == 4
    assert [json.loads(line)["image"] for line in (bank / "errors.jsonl").read_text().splitlines()] == [bad_bank]
    # predict: the bar ends at N/N even when an image is skipped
    monkeypatch.setenv("MODUSEG_PROGRESS", "1")
    out = tmp_path / "pred"
    capsys.readouterr()
    assert (
        main(["predict", str(root / "JPEGImages"), "--bank", str(bank), "--on-error", "skip", "--out", str(out)])
        == EXIT_SKIPPED
    )
    err = capsys.readouterr().err
    n = len(list((root / "JPEGImages").iterdir()))
    assert f"{n}/{n}" in err
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == n and report["predicted"] == n - 2 and report["skipped"]["images"] == 2
    assert len(list((out / "predictions").iterdir())) == n - 2
    # every image failing is an error, not a success with nothing in it
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(root / "JPEGImages" / f"{bad_eval}.jpg", only_bad)
    assert (
        main(["predict", str(only_bad), "--bank", str(bank), "--on-error", "skip", "--out", str(tmp_path / "p2")]) == 2
    )
    assert "all 1 images failed" in capsys.readouterr().err


@pytest.mark.slow
def test_ablate_skip(broken_voc, tmp_path, capsys):
    root, bad_bank, bad_eval = broken_voc
    out = tmp_path / "sweep"
    argv = ["ablate", *_tiny(root), "--grid", "method.top_k=1,5", "--cache-dir", str(tmp_path / "cache"),
            "--on-error", "skip", "--out", str(out)]
    assert main(argv) == EXIT_SKIPPED
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {(r["image"], r["point"]) for r in rows} >= {(bad_bank, 0), (bad_eval, 0), (bad_eval, 1)}
    assert [p["point"] for p in json.loads((out / "results.json").read_text())["points"]] == [0, 1]
    # nothing of a point with skipped images is taken from the cache as if it were whole
    assert main(argv) == EXIT_SKIPPED


# -- progress bars ----------------------------------------------------------------------------------


def test_bar_counts_finished_items_and_ends_at_total(monkeypatch, capsys):
    monkeypatch.setenv("MODUSEG_PROGRESS", "1")
    assert list(progress(range(5), total=5, desc="t")) == list(range(5))
    assert "5/5" in capsys.readouterr().err


def test_error_is_printed_on_its_own_line_after_the_bar(monkeypatch, capsys, tmp_path, coco_mini):
    monkeypatch.setenv("MODUSEG_PROGRESS", "1")
    bar = Bar(10, "work")
    bar.update(3)
    code = main(["run", "--set", "bank_limit=-1"])  # any error while a bar is open
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1].startswith("Error: --set bank_limit=-1")
    assert "3/10" in err.splitlines()[-2]
    close_all()


def test_a_file_managers_metadata_does_not_make_a_folder_foreign(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / ".DS_Store").write_bytes(b"\0")
    out = OutputDir(tmp_path / "o", "run")
    out.begin(["report.json"])
    out.finish()
    assert (tmp_path / "o" / ".DS_Store").exists()

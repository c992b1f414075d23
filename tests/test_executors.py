"""The executor layer without Ray: the shard store, chunking, the CLI's --executor choice, that the
CLI never imports ray, and the local executor's resume (kill -9, then the same command)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moduseg_core.cli import main
from moduseg_core.contract.types import Sample
from moduseg_core.executors.store import ShardStore, read_shard, shard_name, write_shard
from moduseg_core.pipeline.bank_build import ImageRecords, chunks

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "moduseg_core" / "presets" / "coco-mini.yaml")
EXE = Path(sys.executable).with_name("moduseg")


def tiny(coco: Path, bank: int = 6) -> list[str]:
    return ["-c", PRESET, "--set", f"dataset.root={coco}", "--set", f"bank_limit={bank}", "--set", "encoder.resize=224",
            "--set", "method.batch_images=2"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def moduseg(args: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MODUSEG_PROGRESS": "0"}
    env.pop("MODUSEG_CRASH_AT", None)
    if crash:
        env["MODUSEG_CRASH_AT"] = crash
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=300)


# -- the store and the chunks (core, no model) -------------------------------------------------------


def test_shard_roundtrip_is_exact(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    records = [ImageRecords(7, "img_1", vectors, np.array([0, 4, 9], np.int32), regions=4, small=1),
               ImageRecords(8, "img_2", np.zeros((0, 0), np.float32), np.zeros(0, np.int32), regions=2, small=2)]
    name = write_shard(tmp_path, shard_name(0, 3), records, failed=["img_3"])
    assert name == "0-00000003.shard"
    back, failed = read_shard(tmp_path / name)
    assert failed == ["img_3"] and [r.image_id for r in back] == ["img_1", "img_2"]
    assert back[0].vectors.tobytes() == vectors.tobytes() and back[0].labels.tolist() == [0, 4, 9]
    assert (back[0].regions, back[0].small) == (4, 1) and len(back[1].labels) == 0 and back[1].small == 2
    assert back[0].region_ids() == ["img_1/0", "img_1/4", "img_1/9"]
    first = (tmp_path / name).read_bytes()
    write_shard(tmp_path, name, records, failed=["img_3"])
    assert (tmp_path / name).read_bytes() == first, "a shard's bytes depend on its content only"
    assert not list(tmp_path.glob(".*.tmp"))


def test_store_resumes_whole_chunks_of_the_same_settings_only(tmp_path):
    samples = [Sample(id=f"i{k}", image_path=tmp_path / f"i{k}.jpg") for k in range(5)]
    work = chunks(5, 2)
    store = ShardStore(tmp_path / "shards", {"encoder": "a"})
    assert store.open() == 0
    one = ImageRecords(0, "i0", np.ones((1, 2), np.float32), np.array([3], np.int32), 1, 0)
    two = ImageRecords(1, "i1", np.full((1, 2), 2, np.float32), np.array([0], np.int32), 1, 0)
    store.mark_done([("i0", store.write(shard_name(0, 0), [one, two]))], source=0)
    store.write(shard_name(0, 1), [ImageRecords(2, "i2", one.vectors, one.labels, 1, 0)], failed=["i3"])
    store.write(shard_name(0, 2), [ImageRecords(4, "i9", one.vectors, one.labels, 1, 0)])  # not this chunk's image
    (tmp_path / "shards" / "done.jsonl").open("a").write('{"image": "i1", "sh')  # a driver killed mid-line
    assert ShardStore(tmp_path / "shards", {"encoder": "a"}).open() == 0
    assert store.listed() == {"i0"}
    assert store.done(samples, work) == [True, False, False], "a chunk with a failed or foreign image is redone"
    records, failed = store.read(samples, work[:2])
    assert [(r.pos, r.image_id) for r in records] == [(0, "i0"), (1, "i1"), (2, "i2")] and failed == ["i3"]
    (tmp_path / "shards" / "mine.txt").write_text("user file\n")
    assert ShardStore(tmp_path / "shards", {"encoder": "b"}).open() == 3
    assert store.done(samples, work) == [False, False, False] and (tmp_path / "shards" / "mine.txt").is_file()


def test_chunks_depend_on_the_split_and_the_batch_only():
    assert [list(c) for c in chunks(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks(0, 3) == []


# -- the command line ------------------------------------------------------------------------------


def test_the_cli_never_imports_ray():
    code = (
        "import sys\n"
        "from moduseg_core.cli import main\n"
        "main(['--help']); main(['plugins', 'list']); main(['build-bank', '--help'])\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MODUSEG_PROGRESS": "0"}
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_an_unknown_executor_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["build-bank", "--executor", "spark", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'spark'" in err[0] and "local, ray" in err[0] and "--executor local" in err[0]
    assert not (tmp_path / "b").exists()
    assert main(["build-bank", "--set", "ray.actor=2", "--out", str(tmp_path / "b")]) == 2
    assert "did you mean 'actors'" in capsys.readouterr().err


def test_ray_missing_is_one_line_and_nothing_is_written(coco_mini, tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the ray extra were not installed\n"
        "from moduseg_core.cli import main\n"
        f"sys.exit(main(['build-bank', *{tiny(coco_mini)!r}, '--executor', 'ray', '--out', {str(tmp_path / 'b')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MODUSEG_PROGRESS": "0"}
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr[-2000:]
    assert "needs Ray" in err[0] and "pip install 'moduseg[ray]'" in err[0] and "--executor local" in err[0]
    assert not (tmp_path / "b").exists()


def test_ablate_executor_is_checked_and_a_missing_ray_writes_nothing(coco_mini, tmp_path, capsys):
    assert main(["ablate", "--grid", "method.top_k=1,5", "--executor", "rey", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'rey'" in err[0] and "did you mean 'ray'" in err[0] and "--executor local" in err[0]
    assert not (tmp_path / "s").exists()
    sweep = ["ablate", *tiny(coco_mini), "--grid", "method.top_k=1,5",
             "--executor", "ray", "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "cache")]
    code = ("import sys\nsys.modules['ray'] = None\nfrom moduseg_core.cli import main\n"
            f"sys.exit(main({sweep!r}))\n")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MODUSEG_PROGRESS": "0"}
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "needs Ray" in err[-1] and "--executor local" in err[-1], done.stderr[-2000:]
    assert not (tmp_path / "s").exists() and not (tmp_path / "cache").exists()


# -- the local executor resumes --------------------------------------------------------------------


@pytest.mark.slow
def test_local_build_killed_then_resumed_is_byte_identical(coco_mini, tmp_path):
    reference, out = tmp_path / "ref", tmp_path / "bank"
    assert moduseg(["build-bank", *tiny(coco_mini), "--out", str(reference)]).returncode == 0
    killed = moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)], crash="bank-image:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in (out / "shards").glob("*.shard")] == ["0-00000000.shard"], (
        "the first chunk (2 images) is kept"
    )
    assert not (out / "manifest.json").exists()
    again = moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming: 2 of 6 images already in the bank" in again.stderr
    for name in ("vectors.npy", "labels.npy", "manifest.json", "shards/done.jsonl"):
        assert sha(out / name) == sha(reference / name), name


# -- build-bank --add --------------------------------------------------------------------------------


@pytest.mark.slow
def test_add_appends_a_split_without_recomputing_and_refilters_the_whole_bank(coco_mini, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    monkeypatch.setenv("MODUSEG_PROGRESS", "0")
    bank = tmp_path / "bank"
    assert main(["build-bank", *tiny(coco_mini), "--out", str(bank)]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in (bank / "shards").glob("*.shard")}
    val = ["--set", "bank_split=val", "--set", "bank_limit=4"]
    assert main(["build-bank", *tiny(coco_mini), *val, "--add", "--out", str(bank)]) == 0
    assert "added 4 images of split 'val'; the bank has 2 source(s)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (bank / "shards").glob("0-*.shard")} == first, "old images recomputed"
    manifest = json.loads((bank / "manifest.json").read_text())
    assert [s["split"] for s in manifest["sources"]] == ["train", "val"] and manifest["counts"]["images"] == 10
    # the same bank as one build over both lists: the filter ran over the whole bank
    ids = [*(coco_mini / "ImageSets/Segmentation/train.txt").read_text().split()[:6],
           *(coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:4]]
    (tmp_path / "both.txt").write_text("\n".join(ids) + "\n")
    whole = tmp_path / "whole"
    assert main(["build-bank", *tiny(coco_mini, bank=10), "--set", f"dataset.split_file={tmp_path / 'both.txt'}",
                 "--out", str(whole)]) == 0
    for name in ("vectors.npy", "labels.npy"):
        assert sha(bank / name) == sha(whole / name), name
    # adding the same split again changes nothing; a bank of other settings or no bank is refused
    assert main(["build-bank", *tiny(coco_mini), *val, "--add", "--out", str(bank)]) == 0
    assert "resuming: 4 of 4 images already in the bank" in capsys.readouterr().err
    assert sha(bank / "vectors.npy") == sha(whole / "vectors.npy")
    assert main(["build-bank", *tiny(coco_mini), *val, "--set", "encoder.layers=[9]", "--add", "--out", str(bank)]) == 2
    assert "other components" in capsys.readouterr().err
    assert main(["build-bank", *tiny(coco_mini), *val, "--add", "--out", str(tmp_path / "none")]) == 2
    assert "--add needs a bank" in capsys.readouterr().err and not (tmp_path / "none").exists()

"""kill -9 in the middle of build-bank, run and ablate, then the same command again.

Each job runs as the real ``moduseg`` command in a subprocess on tiny coco-mini settings.
``MODUSEG_CRASH_AT=POINT[:N]`` (``moduseg_core.files.faults``) makes it SIGKILL itself at a stage: nothing
of the process's own clean-up runs, exactly as with ``kill -9``. The rerun into the same folder must
leave exactly the files of an uninterrupted run, byte for byte (``SOURCE_DATE_EPOCH`` fixes the bank
manifest's date; timings, the only thing that differs between two runs, are taken out of reports
before hashing), and no stray file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from moduseg_core.files.outputs import MARKER

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).with_name("moduseg")
PRESET = str(Path(__file__).resolve().parents[1] / "moduseg_core" / "presets" / "coco-mini.yaml")
TIMING_KEYS = {"seconds", "first_seconds", "wall"}


def tiny(coco: Path, bank: int = 6, evals: int = 4, resize: int = 224) -> list[str]:
    return [
        "-c",
        PRESET,
        "--set",
        f"dataset.root={coco}",
        "--set",
        f"bank_limit={bank}",
        "--set",
        f"eval_limit={evals}",
        "--set",
        f"encoder.resize={resize}",
        "--set",
        "proposer.n_segments=[20]",
        "--set",
        "method.batch_images=2",
    ]


def moduseg(args: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MODUSEG_PROGRESS": "0"}
    env.pop("MODUSEG_CRASH_AT", None)
    if crash:
        env["MODUSEG_CRASH_AT"] = crash
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=300)


def _drop_timings(value):
    if isinstance(value, dict):
        return {k: _drop_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_drop_timings(v) for v in value]
    return value


def _normalised(path: Path) -> bytes:
    """The file's bytes, with timings taken out of reports (they differ between any two runs)."""
    data = path.read_bytes()
    if path.name in ("report.json", "results.json"):
        return json.dumps(_drop_timings(json.loads(data)), sort_keys=True).encode()
    if path.name == "report.md":
        return data.split(b"| stage | seconds |")[0]
    if path.name == "report.html":  # its timings sit between <!--t--> and <!--/t-->
        return re.sub(rb"<!--t-->.*?<!--/t-->", b"", data, flags=re.S)
    if path.name == "results.md":
        text = re.sub(r"wall [\d.]+ s", "wall _ s", data.decode())
        rows = [line.split("|") for line in text.splitlines()]
        header = next((r for r in rows if "seconds" in [c.strip() for c in r]), None)
        if header is not None:
            col = [c.strip() for c in header].index("seconds")
            text = "\n".join("|".join(r[:col] + r[col + 1:]) if len(r) > col else "|".join(r) for r in rows)
        return text.encode()
    if path.name == "results.csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, name in enumerate(rows[0]) if not name.startswith(("seconds/", "first_seconds/"))]
        return "\n".join(",".join(row[i] for i in keep if i < len(row)) for row in rows).encode()
    return data


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) → sha256 of its normalised content."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(_normalised(p)).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()
    }


def killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def marker_state(folder: Path) -> str | None:
    path = folder / MARKER
    return json.loads(path.read_text())["state"] if path.is_file() else None


# -- build-bank -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_reference(coco_mini, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("kill") / "bank"
    ok(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)]))
    return out, tree(out)


@pytest.mark.parametrize("crash", ["bank-image:3", "bank-save-staged", "bank-save-commit:2"])
def test_build_bank_killed_then_rerun_is_byte_identical(crash, bank_reference, coco_mini, tmp_path):
    _, reference = bank_reference
    out = tmp_path / "bank"
    killed(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)], crash))
    if crash.startswith("bank-image"):
        assert not (out / "manifest.json").exists(), "no bank before every image is done"
        assert len(list((out / "shards").glob("*.shard"))) == 1, "the chunk done so far is kept for the rerun"
    else:
        assert marker_state(out) == "incomplete"
        assert list(out.glob(".bank_save.*.tmp")), "the kill left the save's temporary folder"
        assert not (out / "manifest.json").exists(), "a half-saved bank has no manifest"
        refused = moduseg(["predict", str(coco_mini / "JPEGImages"), "--bank", str(out), "--out", str(tmp_path / "p")])
        assert refused.returncode == 2 and "incomplete" in refused.stderr, refused.stderr
        assert not (tmp_path / "p").exists()
    ok(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)]))
    assert tree(out) == reference  # same files, same bytes, marker complete, no .bank_save.*.tmp left
    assert marker_state(out) == "complete"


def test_build_bank_rerun_keeps_the_users_files(bank_reference, coco_mini, tmp_path):
    """A rerun into a bank folder replaces only the bank's files; what the user put there stays."""
    ref_dir, reference = bank_reference
    out = tmp_path / "bank"
    ok(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)]))
    (out / "notes.txt").write_text("my notes\n")
    (out / "index" / "README").write_text("mine too\n")
    killed(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)], "bank-save-commit:1"))
    ok(moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)]))
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert {k: v for k, v in tree(out).items() if k != "notes.txt"} == reference


# -- run --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_reference(coco_mini, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("kill") / "run"
    ok(moduseg(["run", *tiny(coco_mini), "--out", str(out)]))
    return out, tree(out)


@pytest.mark.parametrize("crash", ["bank-save-commit:2", "prediction:2", "report"])
def test_run_killed_then_rerun_is_byte_identical(crash, run_reference, coco_mini, tmp_path):
    _, reference = run_reference
    out = tmp_path / "run"
    killed(moduseg(["run", *tiny(coco_mini), "--out", str(out)], crash))
    assert marker_state(out) == "incomplete"
    assert not (out / "report.json").exists()
    refused = moduseg(["evaluate", str(out / "predictions"), *tiny(coco_mini)[:4]])
    if (out / "predictions").is_dir():
        assert refused.returncode == 2 and "interrupted" in refused.stderr, refused.stderr
    ok(moduseg(["run", *tiny(coco_mini), "--out", str(out)]))
    assert tree(out) == reference
    assert marker_state(out) == "complete"


def test_run_killed_while_building_its_bank_resumes_it(run_reference, coco_mini, tmp_path):
    """`run --executor local` keeps its bank's finished chunks (OUT/bank/shards/): a rerun computes the rest only."""
    _, reference = run_reference
    out = tmp_path / "run"
    killed(moduseg(["run", *tiny(coco_mini), "--out", str(out)], "bank-collect:2"))  # 2 of 3 chunks recorded
    again = moduseg(["run", *tiny(coco_mini), "--out", str(out)])
    ok(again)
    assert "resuming: 4 of 6 images already in the bank" in again.stderr
    assert tree(out) == reference


def test_run_rerun_with_fewer_images_removes_its_stale_predictions(coco_mini, tmp_path):
    out = tmp_path / "run"
    ok(moduseg(["run", *tiny(coco_mini), "--out", str(out)]))
    (out / "predictions" / "mine.txt").write_text("not moduseg's\n")
    ok(moduseg(["run", *tiny(coco_mini, evals=2), "--set", "overlays=false", "--out", str(out)]))
    first_two = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:2]
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(
        [f"{i}.png" for i in first_two] + ["mine.txt"]
    )
    assert not (out / "overlays").exists()
    assert json.loads((out / "report.json").read_text())["eval"]["images"] == 2


# -- ablate -----------------------------------------------------------------------------------------


def _sweep(coco: Path, out: Path) -> list[str]:
    return [
        "ablate",
        *tiny(coco, bank=4, evals=2, resize=112),
        "--grid",
        "method.top_k=1,5",
        "--no-cache",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def ablate_reference(coco_mini, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("kill") / "sweep"
    ok(moduseg(_sweep(coco_mini, out)))
    return out, tree(out)


@pytest.mark.parametrize("crash", ["ablate-point:1", "prediction:3"])
def test_ablate_killed_then_rerun_is_byte_identical(crash, ablate_reference, coco_mini, tmp_path):
    _, reference = ablate_reference
    out = tmp_path / "sweep"
    killed(moduseg(_sweep(coco_mini, out), crash))
    assert marker_state(out) == "incomplete"
    ok(moduseg(_sweep(coco_mini, out)))
    assert tree(out) == reference
    assert marker_state(out) == "complete"


def test_ablate_killed_while_caching_a_bank_leaves_no_partial_entry(coco_mini, tmp_path):
    cache = tmp_path / "cache"
    args = ["ablate", *tiny(coco_mini, bank=4, evals=2, resize=112), "--grid", "method.top_k=1,5",
            "--cache-dir", str(cache), "--out", str(tmp_path / "sweep")]
    killed(moduseg(args, "bank-save-commit:2"))
    assert list(cache.rglob(".*.tmp")), "the kill left the cache entry's temporary"
    ok(moduseg(args))
    assert not list(cache.rglob(".*.tmp")), "the rerun removed the killed writer's temporary"
    assert not [p for p in (tmp_path / "sweep").rglob(".*.tmp")]
    listed = moduseg(["cache", "list", "--json", "--stage", "banks", "--cache-dir", str(cache)])
    assert [e["partial"] for e in json.loads(listed.stdout)] == [False]

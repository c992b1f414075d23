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
from moduseg_core.failures import EXIT_SKIPPED

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'moduseg[ray]')")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "moduseg_core" / "presets" / "coco-mini.yaml")
EXE = Path(sys.executable).with_name("moduseg")
BANK_FILES = ("vectors.npy", "labels.npy", "manifest.json")


def tiny(coco: Path, bank: int = 6) -> list[str]:
    return ["-c", PRESET, "--set", f"dataset.root={coco}", "--set", f"bank_limit={bank}", "--set", "encoder.resize=224",
            "--set", "method.batch_images=2"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_bank(a: Path, b: Path) -> None:
    for name in BANK_FILES:
        assert sha(a / name) == sha(b / name), f"{name} differs between {a} and {b}"


def moduseg(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MODUSEG_PROGRESS": "0", **env}
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
    ray.init(num_cpus=4, include_dashboard=False, logging_level="error", _node_ip_address="127.0.0.1")
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


def _broken_copy(coco: Path, root: Path) -> str:
    """The first 5 bank images of coco-mini, the second of them corrupt; its id."""
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClassVOC"):
        (root / sub).mkdir(parents=True)
    shutil.copy(coco / "image_labels_voc.json", root)
    ids = (coco / "ImageSets/Segmentation/train.txt").read_text().split()[:5]
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    for i in ids:
        shutil.copy(coco / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(coco / "SegmentationClassVOC" / f"{i}.png", root / "SegmentationClassVOC")
    (root / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")
    return ids[1]


def test_ray_follows_on_error(local_ray, coco_mini, tmp_path, capsys):
    bad = _broken_copy(coco_mini, tmp_path / "voc")
    args = tiny(tmp_path / "voc", bank=5)
    assert main(["build-bank", *args, "--executor", "ray", "--out", str(tmp_path / "fail")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{bad}.jpg" in err[-1] and not (tmp_path / "fail" / "manifest.json").exists()
    for executor in ("ray", "local"):
        out = tmp_path / f"skip-{executor}"
        assert main(["build-bank", *args, "--executor", executor, "--on-error", "skip", "--out", str(out)]) == EXIT_SKIPPED
        rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
        assert [(r["image"], r["stage"]) for r in rows] == [(bad, "read")]
        assert json.loads((out / "manifest.json").read_text())["counts"]["skipped_images"] == 1
    same_bank(tmp_path / "skip-ray", tmp_path / "skip-local")


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_node(args: list[str], log: Path) -> subprocess.Popen:
    ray_exe = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray_exe), "start", "--block", "--node-ip-address=127.0.0.1", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes on exit
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_two_nodes_share_the_work_and_the_bank_is_identical(reference, coco_mini, tmp_path):
    port = _free_port()
    temp = Path("/tmp") / f"moduseg-ray-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    nodes: list[subprocess.Popen] = []
    try:
        # 3 + 2 logical CPUs and actors of 2: exactly one actor fits on each node
        nodes.append(_ray_node(["--head", f"--port={port}", "--num-cpus=3", "--num-gpus=0", "--include-dashboard=false",
                                f"--temp-dir={temp}"], tmp_path / "head.log"))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        nodes.append(None)  # type: ignore[arg-type]
        while True:
            probe = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                                   capture_output=True, text=True)
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
                                    capture_output=True, text=True).stdout
            if "0.0/5.0 CPU" in status:
                break
            assert time.monotonic() < deadline and nodes[1].poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        done = moduseg(args, RAY_ADDRESS=address)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "computed by 2 actor(s) on 2 node(s)" in done.stdout, done.stdout
        same_bank(out, reference)
    finally:
        for process in reversed([n for n in nodes if n is not None]):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)

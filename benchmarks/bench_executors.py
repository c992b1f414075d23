"""Bank build on coco-mini: the local executor against Ray with 1 and 2 workers, on this machine.

Each build is the real ``moduseg build-bank`` command in a fresh process (model loading, and for
Ray the start of a local instance, included: that is what a user waits for), into a new folder.
Every bank's ``vectors.npy`` / ``labels.npy`` sha256 is printed beside its time: they must agree.
From the local build's per-image cost it projects COCO train2014 (82,783 images) on N workers, and
does the same from the GPU per-image cost of docs/performance.md when ``--gpu-seconds`` is given.

    .venv/bin/python benchmarks/bench_executors.py --data ../shared/data/coco-mini [--limit 64] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "moduseg_core" / "presets" / "coco-mini.yaml"
COCO_TRAIN2014 = 82_783


def build(data: Path, out: Path, limit: int | None, extra: list[str]) -> dict:
    exe = Path(sys.executable).with_name("moduseg")
    args = [str(exe), "build-bank", "-c", str(PRESET), "--set", f"dataset.root={data}", "--out", str(out), *extra]
    if limit:
        args += ["--set", f"bank_limit={limit}"]
    env = {**os.environ, "MODUSEG_PROGRESS": "0", "SOURCE_DATE_EPOCH": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra) or 'local'} failed:\n{done.stderr[-3000:]}")
    sha = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("vectors.npy", "labels.npy")}
    return {"wall_s": round(wall, 2), "sha256": sha}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--limit", type=int, default=None, help="bank images (default: all 191 of coco-mini's train)")
    parser.add_argument(
        "--gpu-seconds",
        type=float,
        default=0.04,
        help="per-image bank cost on one GPU for the projection (docs/performance.md: 1.3 s / 32 images, H100)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    images = args.limit or len((args.data / "ImageSets/Segmentation/train.txt").read_text().split())
    runs = {"local": [], "ray, 1 worker": ["--executor", "ray", "--set", "ray.actors=1"],
            "ray, 2 workers": ["--executor", "ray", "--set", "ray.actors=2"]}
    results = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="moduseg-bench-") as tmp:
        for i, (name, extra) in enumerate(runs.items()):
            results[name] = build(args.data, Path(tmp) / f"bank{i}", args.limit, extra)
            print(
                f"{name:<15} {results[name]['wall_s']:8.1f} s  vectors {results[name]['sha256']['vectors.npy'][:16]}  "
                f"labels {results[name]['sha256']['labels.npy'][:16]}",
                flush=True,
            )
    local = results["local"]["wall_s"]
    identical = len({json.dumps(r["sha256"], sort_keys=True) for r in results.values()}) == 1
    per_image = local / images
    print(f"\n{images} images on {os.cpu_count()} CPU cores (1-min load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); banks byte-identical: {identical}")
    for name, r in results.items():
        if name != "local":
            print(f"{name}: {r['wall_s'] / local:.2f}x the local wall time ({r['wall_s'] - local:+.1f} s)")
    print(f"\nper image (local, model loading included): {per_image:.3f} s")
    projection = {}
    for n in (1, 2, 4, 8, 16):
        cpu_h = COCO_TRAIN2014 * per_image / n / 3600
        gpu_min = COCO_TRAIN2014 * args.gpu_seconds / n / 60
        projection[n] = {"cpu_hours": round(cpu_h, 2), "gpu_minutes": round(gpu_min, 1)}
        print(f"COCO train2014 ({COCO_TRAIN2014:,} images) on {n:2d} workers: {cpu_h:7.2f} h like this machine's "
              f"workers, {gpu_min:6.1f} min at {args.gpu_seconds} s/image per GPU")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "images": images,
                    "cpus": os.cpu_count(),
                    "load_average": [load_before, os.getloadavg()],
                    "runs": results,
                    "identical": identical,
                    "per_image_s": per_image,
                    "gpu_seconds": args.gpu_seconds,
                    "projection": projection,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()

"""What the stage cache saves on a sweep: cold run, rerun, and points run one by one without it.

Runs `moduseg ablate SWEEP` three ways and prints wall times and encoder passes:

1. cold: an empty stage cache (a fresh --cache-dir);
2. rerun: the same command again (every point is a cache hit);
3. uncached: the first N points with --no-cache (plain `moduseg run` per point), extrapolated
   to the whole sweep from their mean wall time.

    .venv/bin/python benchmarks/bench_ablate.py --data ../shared/data/coco-mini \
        [--sweep docs/examples/ablations/coco-mini.yaml] [--uncached-points 2] [--set bank_limit=20 ...]

The machine's load average is printed with each timing: on a shared machine the numbers are
only comparable under similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _ablate(args: list[str]) -> tuple[float, str]:
    env = dict(os.environ, MODUSEG_PROGRESS="0")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "moduseg_core", "ablate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"moduseg ablate {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="coco-mini folder")
    parser.add_argument("--sweep", type=Path, default=ROOT / "docs/examples/ablations/coco-mini.yaml")
    parser.add_argument("--uncached-points", type=int, default=2, help="points timed without the cache")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the base")
    parser.add_argument("--work", type=Path, default=None, help="folder for caches and results (default: a temp dir)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ablate-"))
    base = [str(args.sweep), "--set", f"dataset.root={args.data.resolve()}"]
    for item in args.sets:
        base += ["--set", item]
    cached = [*base, "--cache-dir", str(work / "stages"), "--out", str(work / "cached")]

    print(f"sweep {args.sweep.name}; work folder {work}")
    load = _load()
    cold, _ = _ablate(cached)
    results = json.loads((work / "cached" / "results.json").read_text())
    n_points = len(results["points"])
    enc = results["sweep"]["encoder"]
    print(f"cold    {cold:9.1f} s  ({n_points} points; load before {load})")
    load = _load()
    rerun, _ = _ablate(cached)
    print(f"rerun   {rerun:9.1f} s  (load before {load})")

    # the first N points, each a plain `moduseg run`: select them with single-valued --grid axes
    from moduseg_core.ablate import expand, load_sweep

    points = expand(load_sweep(args.sweep))[: args.uncached_points]
    times = []
    for point in points:
        grid = []
        for key, value in point.values.items():
            text = json.dumps(value) if not isinstance(value, str) else value
            grid += ["--grid", f"{key}={text}"]
        load = _load()
        wall, _ = _ablate([*base, *grid, "--no-cache", "--out", str(work / f"uncached-{point.index}")])
        times.append(wall)
        print(f"uncached point {point.index} ({point.label}): {wall:.1f} s  (load before {load})")
    mean = sum(times) / len(times)
    print()
    print("| run | wall (s) |")
    print("|---|---:|")
    print(f"| cold sweep, {n_points} points | {cold:.1f} |")
    print(f"| rerun (all cached) | {rerun:.1f} |")
    print(
        f"| one by one without cache (mean of {len(times)} points × {n_points}, extrapolated) | {mean * n_points:.1f} |"
    )
    print()
    print(f"encoder passes: {enc['passes']} with the cache, {enc['uncached_passes']} one by one "
          f"({100 * enc['saved_fraction']:.1f} % saved)")


if __name__ == "__main__":
    main()

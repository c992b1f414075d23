"""Systematic ablations: sweep files, points run through the stage cache, result tables and plots.

    from moduseg_core.ablate import load_sweep, run_sweep
    from moduseg_core.cache import StageCache

    sweep = load_sweep("docs/examples/ablations/coco-mini.yaml")
    reports, summary = run_sweep(sweep, "runs/ablate/coco-mini", cache=StageCache())

See docs/ablations.md.
"""

from moduseg_core.ablate.run import SweepRun, run_sweep
from moduseg_core.ablate.sweep import Point, Sweep, compose_sweep, expand, load_sweep, parse_axis, sweep_from_dict

__all__ = [
    "Point",
    "Sweep",
    "SweepRun",
    "compose_sweep",
    "expand",
    "load_sweep",
    "parse_axis",
    "run_sweep",
    "sweep_from_dict",
]

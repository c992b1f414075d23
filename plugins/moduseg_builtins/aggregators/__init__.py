"""Aggregators: patch tokens + a mask → one L2-normalised vector (METHOD.md, bank step 6, inference step 2).

This package is the ``aggregators`` entry point. ``soft``: each patch weighted by the fraction
of its footprint the mask covers (the paper's); ``hard``: weight 1 for patches covered at least
``threshold`` (ablation). Both in ``pool``: numpy by default, torch on a GPU with
``device=cuda`` (``_pool_torch``, imported only then).
"""

from __future__ import annotations

from moduseg_core import hookimpl

from .pool import HardAggregator, HardOptions, PoolOptions, SoftAggregator


@hookimpl
def register_aggregators(register):
    register("soft", SoftAggregator, options=PoolOptions, summary="Area-weighted soft pooling (paper)")
    register("hard", HardAggregator, options=HardOptions, summary="Binary patch weights (ablation)")

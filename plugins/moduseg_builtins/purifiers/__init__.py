"""Purifiers: a labeler's class region → the region whose features are pooled (METHOD.md, bank steps 3-4).

This package is the ``purifiers`` entry point. ``erode``: the paper's semantic boundary
purification (3×3 erosion, 20 passes; the rule itself is ``moduseg_core.method.purify``);
``none``: the region as it is (ablation). numpy only.
"""

from __future__ import annotations

from moduseg_core import hookimpl

from .erode import ErodeOptions, ErodePurifier, NoPurifier


@hookimpl
def register_purifiers(register):
    register("erode", ErodePurifier, options=ErodeOptions, summary="Square erosion, border counts as inside (paper)")
    register("none", lambda options: NoPurifier(), summary="No purification (ablation)")

"""Plugin hooks. A plugin implements any of them and calls ``register`` once per component.

    from moduseg_core import hookimpl

    @hookimpl
    def register_proposers(register):
        register("grid", make_grid_proposer, options=GridOptions, summary="Regular tiles")

``register(name, factory, *, options=NoOptions, summary="", extra=None,
requires=(), weights=None, oracle=False, install=None)``: ``factory(options)`` builds the
component and is where heavy imports belong. ``install`` is the install
instruction shown when ``requires`` is missing and no pip extra provides it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("moduseg")
hookimpl = pluggy.HookimplMarker("moduseg")


@hookspec
def register_datasets(register):
    """Register Dataset factories."""


@hookspec
def register_labelers(register):
    """Register Labeler factories."""


@hookspec
def register_proposers(register):
    """Register MaskProposer factories."""


@hookspec
def register_purifiers(register):
    """Register Purifier factories."""


@hookspec
def register_encoders(register):
    """Register FeatureEncoder factories."""


@hookspec
def register_aggregators(register):
    """Register Aggregator factories."""


@hookspec
def register_indexes(register):
    """Register BankIndex factories."""

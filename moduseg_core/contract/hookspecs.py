"""Plugin hooks. A plugin implements any of them and calls ``register`` once per component.

    from moduseg_core import hookimpl

    @hookimpl
    def register_proposers(register: Register) -> None:
        register("grid", make_grid_proposer, options=GridOptions, summary="Regular tiles")

``register(name, factory, *, options=NoOptions, summary="", extra=None,
requires=(), weights=None, oracle=False, install=None)``: ``factory(options)`` builds the
component and is where heavy imports belong. ``install`` is the install
instruction shown when ``requires`` is missing and no pip extra provides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    from moduseg_core.contract.options import Options

    class Register(Protocol):
        """The ``register`` callable each hook receives."""

        def __call__(
            self,
            name: str,
            factory: Callable[[Any], Any],
            *,
            options: type[Options] = ...,
            summary: str = "",
            extra: str | None = None,
            requires: Sequence[str] = (),
            weights: str | None = None,
            oracle: bool = False,
            install: str | None = None,
        ) -> None: ...

hookspec = pluggy.HookspecMarker("moduseg")
hookimpl = pluggy.HookimplMarker("moduseg")


@hookspec
def register_datasets(register: Register) -> None:
    """Register Dataset factories."""


@hookspec
def register_labelers(register: Register) -> None:
    """Register Labeler factories."""


@hookspec
def register_proposers(register: Register) -> None:
    """Register MaskProposer factories."""


@hookspec
def register_purifiers(register: Register) -> None:
    """Register Purifier factories."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register FeatureEncoder factories."""


@hookspec
def register_aggregators(register: Register) -> None:
    """Register Aggregator factories."""


@hookspec
def register_indexes(register: Register) -> None:
    """Register BankIndex factories."""

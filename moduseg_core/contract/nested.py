"""Components inside components: a nested component takes where its model is from the run's own.

A component may build another one from options it holds (the ``corrclip`` labeler builds the
proposer named by its ``proposer`` option from its ``proposer_options``). Its options class says
so with ``nested_options = {"proposer_options": ("proposer", "proposer")}`` (options field →
kind, field naming the component). When the run's own component of that kind is the same one,
the nested options take the run's values of that component's ``shared_fields`` (where its model
is: a folder, a checkpoint) unless they set them: a path given once is used twice.
"""

from __future__ import annotations

from typing import Any

from .errors import ModusegError
from .kinds import KINDS


def inherit_shared(config: Any) -> Any:
    """``config`` (a ``RunConfig``) with nested options completed from the run's own components (unchanged
    when nothing applies)."""
    from .plugins import get_spec

    data: dict[str, Any] | None = None
    for kind in KINDS:
        choice = config.choice(kind)
        try:
            spec = get_spec(kind, choice.name)
        except ModusegError:
            continue  # reported where the config is validated
        for field, (inner_kind, name_field) in getattr(spec.options, "nested_options", {}).items():
            inner_name = choice.options.get(name_field, _default(spec.options, name_field))
            own = config.choice(inner_kind) if inner_kind in KINDS else None
            if not inner_name or own is None or own.name != inner_name:
                continue
            try:
                shared: frozenset[str] = getattr(get_spec(inner_kind, inner_name).options, "shared_fields", frozenset())
            except ModusegError:
                continue
            nested = choice.options.get(field) or {}
            if not isinstance(nested, dict):
                continue
            missing = {k: v for k, v in own.options.items() if k in shared and k not in nested}
            if missing:
                data = data or config.model_dump(mode="python")
                data[kind]["options"][field] = {**nested, **missing}
    return config if data is None else type(config).model_validate(data)


def _default(options: type, field: str) -> Any:
    info = getattr(options, "model_fields", {}).get(field)
    return None if info is None else info.get_default(call_default_factory=True)

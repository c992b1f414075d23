"""Base class for component options: pydantic, strict keys, frozen."""

from __future__ import annotations

from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from moduseg_core.contract.errors import ModusegError, did_you_mean


class Options(BaseModel):
    """Every component's options model derives from this.

    Unknown keys are refused. ``runtime_fields`` names options that change how a
    component runs (device, batch size...) but not what it computes; they are left
    out of fingerprints, so a bank built on a GPU loads on a CPU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    runtime_fields: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        """The options that determine a component's output (JSON-ready)."""
        return self.model_dump(mode="json", exclude=set(self.runtime_fields))


class NoOptions(Options):
    """For components that take no options."""


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _type_text(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " or ".join(repr(v) for v in get_args(annotation))
    if get_origin(annotation) in (Union, UnionType):
        parts = [_type_text(a) for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in get_args(annotation) else text
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def describe_field(model: type[BaseModel], key: str) -> str:
    """What a field accepts, e.g. ``int ≥ 1 or null``, ``'fail' or 'skip'``, ``float ≥ 0.0 and < 1.0``."""
    info = model.model_fields[key]
    text = _type_text(info.annotation)
    bounds = [f"{sign} {getattr(m, attr)}" for m in info.metadata for attr, sign in _BOUNDS if hasattr(m, attr)]
    if bounds:
        head, null, _ = text.partition(" or null")
        text = f"{head} {' and '.join(bounds)}" + (" or null" if null else "")
    return text


def parse_options(kind: str, name: str, model: type[Options], values: dict[str, Any]) -> Options:
    """Validate ``values`` against ``model`` with a one-line error naming the bad key."""
    allowed = sorted(model.model_fields)
    for key in values:
        if key not in model.model_fields:
            allowed_text = ", ".join(allowed) if allowed else "none"
            raise ModusegError(
                f"{kind} {name!r} has no option {key!r}{did_you_mean(key, allowed)} "
                f"(allowed: {allowed_text}); see `moduseg plugins show {name}`"
            )
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "?"
        field = key.split(".")[0]
        expected = describe_field(model, field) if field in model.model_fields else "?"
        if error.get("type") == "missing":
            raise ModusegError(
                f"{kind} {name!r} needs option {key} ({expected}); set it with --set {kind}.{field}=..."
            ) from exc
        given = values.get(field, error.get("input"))
        expected_text = "" if error["msg"].endswith(expected) else f" (expected {expected})"  # (a Literal's names them)
        raise ModusegError(
            f"{kind} {name!r} option {key}={given!r} is invalid: {error['msg']}{expected_text}; "
            f"fix it with --set {kind}.{field}=..."
        ) from exc

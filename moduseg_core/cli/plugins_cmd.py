"""`moduseg plugins list|show`: what is installed, from the registry alone (nothing heavy imported)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from moduseg_core.contract.errors import ModusegError, did_you_mean
from moduseg_core.contract.options import describe_field
from moduseg_core.contract.plugins import KINDS, check_kind, list_components

PLURAL = {"index": "indexes"}

app = typer.Typer(help="List and describe installed components.", no_args_is_help=True)


def _options_summary(spec) -> list[dict]:
    rows = []
    for key, info in spec.options.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        rows.append(
            {
                "name": key,
                "type": describe_field(spec.options, key),  # e.g. int ≥ 1, 'library' or 'fast', str or null
                "default": default if info.is_required() is False else "(required)",
                "description": info.description or "",
            }
        )
    return rows


def _row(spec) -> dict:
    return {
        "kind": spec.kind,
        "name": spec.name,
        "summary": spec.summary,
        "plugin": spec.plugin,
        "module": spec.module,
        "extra": spec.extra,
        "requires": list(spec.requires),
        "importable": spec.importable,
        "missing": spec.missing_requirements(),
        "weights": spec.weights,
        "oracle": spec.oracle,
    }


@app.command("list")
def list_cmd(
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every registered component, by kind, with whether it can be built here."""
    specs = list_components(kind)
    if as_json:
        typer.echo(json.dumps([_row(s) for s in specs], indent=2, default=str))
        return
    current = None
    for spec in specs:
        if spec.kind != current:
            current = spec.kind
            typer.echo(f"{PLURAL.get(current, current + 's')}:")
        status = (
            "ok" if spec.importable else f"missing {', '.join(spec.missing_requirements())} -> {spec.install_hint()}"
        )
        extra = f" [{spec.extra}]" if spec.extra else ""
        typer.echo(f"  {spec.name:<14} {spec.summary}{extra}  ({status}; {spec.plugin})")


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Component name.")],
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Kind, when the name exists in several.")] = None,
) -> None:
    """One component: its plugin, install extra, weights and every option with its default."""
    specs = [s for s in list_components(kind) if s.name == name]
    if not specs:
        names = sorted({s.name for s in list_components(kind)})
        raise ModusegError(f"no component named {name!r}{did_you_mean(name, names)} (installed: {', '.join(names)})")
    for spec in specs:
        row = _row(spec)
        typer.echo(f"{spec.kind} {spec.name}: {spec.summary}")
        for key in ("plugin", "module", "extra", "weights"):
            if row[key]:
                typer.echo(f"  {key}: {row[key]}")
        typer.echo(f"  importable: {'yes' if spec.importable else 'no, install with: ' + spec.install_hint()}")
        if spec.oracle:
            typer.echo("  ORACLE: reads ground truth; results are an upper bound, not weak supervision")
        fields = _options_summary(spec)
        typer.echo("  options:" if fields else "  options: none")
        for f in fields:
            typer.echo(f"    {f['name']} ({f['type']}, default {f['default']!r}): {f['description']}")


__all__ = ["app", "KINDS", "check_kind"]

"""Options shared by the CLI commands and the error boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import RUN_KINDS, RunConfig, apply_overrides, load_config

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config (see docs/configuration.md).")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="Dataset plugin name (voc, coco, folder...).")]
LabelerOpt = Annotated[Optional[str], typer.Option("--labeler", help="Labeler name (gt is the ORACLE).")]
ProposerOpt = Annotated[Optional[str], typer.Option("--proposer", help="Mask proposer name.")]
PurifierOpt = Annotated[Optional[str], typer.Option("--purifier", help="Purifier name.")]
EncoderOpt = Annotated[Optional[str], typer.Option("--encoder", help="Feature encoder name.")]
AggregatorOpt = Annotated[Optional[str], typer.Option("--aggregator", help="Aggregator name.")]
IndexOpt = Annotated[Optional[str], typer.Option("--index", help="Bank index name.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override: KIND.OPTION=VALUE, method.KEY=VALUE or a top-level key; repeatable."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


def compose(
    config: Optional[Path],
    sets: Optional[list[str]],
    **choices: Optional[str],
) -> RunConfig:
    """Config file, then ``--<kind> NAME`` choices, then ``--set`` overrides."""
    base = load_config(config)
    return apply_overrides(base, choices=choices, sets=sets or [])


__all__ = ["RUN_KINDS", "compose"]

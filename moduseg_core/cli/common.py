"""Options shared by the CLI commands and the error boundary."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.contract.config import RunConfig, apply_overrides, load_config
from moduseg_core.contract.kinds import RUN_KINDS

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config (see docs/configuration.md).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Dataset plugin name (voc, coco, folder...).")]
LabelerOpt = Annotated[str | None, typer.Option("--labeler", help="Labeler name (gt is the ORACLE).")]
ProposerOpt = Annotated[str | None, typer.Option("--proposer", help="Mask proposer name.")]
PurifierOpt = Annotated[str | None, typer.Option("--purifier", help="Purifier name.")]
EncoderOpt = Annotated[str | None, typer.Option("--encoder", help="Feature encoder name.")]
AggregatorOpt = Annotated[str | None, typer.Option("--aggregator", help="Aggregator name.")]
IndexOpt = Annotated[str | None, typer.Option("--index", help="Bank index name.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override: KIND.OPTION=VALUE, method.KEY=VALUE or a top-level key; repeatable."),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Output folder: new, empty, or an earlier output of this command (docs/reliability.md)."
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help=(
            "Replace the output of another moduseg command in --out, or start an earlier output afresh (only files "
            "moduseg wrote are removed; never a folder it did not write)."
        ),
    ),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help=(
            "Where the per-image work runs: local (this process, the default) or ray (a Ray cluster: RAY_ADDRESS, `ray "
            "start`, or a local instance; docs/scaling.md). Same as --set executor=..."
        ),
    ),
]


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


OnErrorOpt = Annotated[
    OnError | None,
    typer.Option(
        "--on-error",
        help=(
            "An image that cannot be processed stops the job (fail, the default) or is logged to OUT/errors.jsonl and "
            "left out (skip; exit code 3). Same as --set on_error=..."
        ),
    ),
]


def compose(
    config: Path | None,
    sets: list[str] | None,
    on_error: OnError | None = None,
    *,
    executor: str | None = None,
    **choices: str | None,
) -> RunConfig:
    """Config file, then ``--<kind> NAME`` choices, then ``--set`` overrides, then ``--on-error`` and ``--executor``."""
    base = load_config(config)
    extra = [f"on_error={on_error.value}"] if on_error is not None else []
    if executor is not None:
        from moduseg_core.executors import check_executor

        extra.append(f"executor={check_executor(executor)}")
    return apply_overrides(base, choices=choices, sets=[*(sets or []), *extra])


def exit_code(skipped: int) -> int:
    """0, or ``EXIT_SKIPPED`` when images were skipped (``on_error: skip``)."""
    from moduseg_core.files.failures import EXIT_SKIPPED

    if skipped:
        typer.secho(
            f"NOTE: {skipped} image(s) skipped (on_error: skip); reasons in errors.jsonl", fg="yellow", err=True
        )
        return EXIT_SKIPPED
    return 0


__all__ = ["RUN_KINDS", "compose"]

"""`moduseg doctor`: check every component of a config before a long job (nothing heavy is built)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.cli.common import (
    AggregatorOpt,
    ConfigOpt,
    DatasetOpt,
    EncoderOpt,
    IndexOpt,
    LabelerOpt,
    ProposerOpt,
    PurifierOpt,
    SetOpt,
    compose,
)


def doctor(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    labeler: LabelerOpt = None,
    proposer: ProposerOpt = None,
    purifier: PurifierOpt = None,
    encoder: EncoderOpt = None,
    aggregator: AggregatorOpt = None,
    index: IndexOpt = None,
    sets: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also check this output folder (as `run --out`).")
    ] = None,
) -> int:
    """Check a config before a job: packages, compiled ops, checkpoints and hub ids, devices, data, --out.

    One line per component: ok, or what is missing and the exact fix. Exit code 0 when everything
    would run, 2 otherwise. `run`, `build-bank` and `ablate` run the same checks first."""
    from moduseg_core.contract.kinds import KINDS
    from moduseg_core.doctor.run import diagnose

    cfg = compose(
        config,
        sets,
        dataset=dataset,
        labeler=labeler,
        proposer=proposer,
        purifier=purifier,
        encoder=encoder,
        aggregator=aggregator,
        index=index,
    )
    lines = diagnose(cfg, KINDS, out=out, command="run")
    width = max(len(line.kind) for line in lines)
    for line in lines:
        typer.echo(line.render(width))
    failed = [line for line in lines if not line.ok]
    if failed:
        typer.echo(
            f"{len(failed)} of {len(lines)} checks failed: {', '.join(f'{x.kind} {x.name}' for x in failed)}", err=True
        )
        return 2
    typer.echo(f"all {len(lines)} ok")
    return 0

"""`moduseg bank show BANK --out DIR`: the bank atlas, a self-contained page about a saved bank."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.cli.common import OutOpt, OverwriteOpt

app = typer.Typer(help="Look into a saved bank.", no_args_is_help=True)


@app.command("show")
def show(
    bank: Annotated[Path, typer.Argument(help="A bank folder (of build-bank, or a run's bank/).")],
    out: OutOpt = Path("runs/atlas"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Write OUT/atlas.html: per class the regions seen, under the area minimum, dropped by the outlier filter
    and kept; grids of kept and dropped regions; a 2-D map of the bank's vectors; the class confusion of
    leave-one-out k-NN over the bank (docs/report.md)."""
    import os

    from moduseg_core.contract.errors import ModusegError
    from moduseg_core.files.outputs import prepare
    from moduseg_core.pipeline.bank import Bank

    if not bank.is_dir():
        raise ModusegError(f"bank {bank} is not a folder; pass the folder of a `moduseg build-bank` (or a run's bank/)")
    if os.path.abspath(bank) == os.path.abspath(out):
        raise ModusegError(f"--out {out} is the bank folder; write the atlas into another folder")
    from moduseg_core.report_html.atlas import write_atlas

    output = prepare(out, "bank-show", overwrite=overwrite)
    assert output is not None  # --out has a default
    loaded = Bank.load(bank)

    with output:
        output.protect(bank)
        output.begin(["atlas.html"])
        write_atlas(out / "atlas.html", loaded)
        output.finish()
    if loaded.traced() is None:
        typer.secho(
            f"NOTE: bank {bank} has no provenance: rebuild to explain (the atlas has counts, map and "
            "confusion, no region pictures)",
            fg="yellow",
            err=True,
        )
    typer.echo(f"atlas: {out / 'atlas.html'} (open it in a browser)")

"""`moduseg ablate` and `moduseg cache list | size | prune`: parse the arguments, call
``moduseg_core.ablate`` and ``moduseg_core.cache.listing``, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moduseg_core.cli.common import ConfigOpt, ExecutorOpt, OnErrorOpt, OverwriteOpt, SetOpt, exit_code

GridOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        "-g",
        help="Axis KEY=V1,V2,... of the cartesian product (values are YAML: encoder.layers=[8],[10]); repeatable.",
    ),
]
ZipOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--zip", help="Axis KEY=V1,V2,... advancing together with the other --zip axes (equal lengths); repeatable."
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Stage cache folder (default: $MODUSEG_CACHE/stages, ~/.cache/moduseg/stages)."),
]


def _cache(cache_dir: Path | None):
    from moduseg_core.cache import StageCache

    return StageCache(cache_dir)


def ablate(
    sweep_file: Annotated[
        Path | None,
        typer.Argument(metavar="[SWEEP.yaml]", help="Sweep file: base, grid, zip, limits (docs/ablations.md)."),
    ] = None,
    config: ConfigOpt = None,
    grid: GridOpt = None,
    zip_axes: ZipOpt = None,
    sets: SetOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Sweep name (default: the file's name or 'sweep').")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results folder (default: runs/ablate/NAME).")
    ] = None,
    cache_dir: CacheDirOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every point as a plain `moduseg run` (nothing cached or reused).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate every point and list them; run nothing.")
    ] = False,
    overwrite: OverwriteOpt = False,
    on_error: OnErrorOpt = None,
    executor: ExecutorOpt = None,
) -> int:
    """Run a sweep of full runs (bank + predict + evaluate) through the stage cache.

    Points are the grid's cartesian product times the zipped axes; results go to
    results.csv / .json / .md and plots/*.png in --out."""
    from moduseg_core.ablate import compose_sweep, expand, run_sweep
    from moduseg_core.ablate.results import point_line, summary_line
    from moduseg_core.files.outputs import prepare

    if executor is not None:
        from moduseg_core.executors import check_executor

        check_executor(executor)
        sets = [*(sets or []), f"executor={executor}"]
    sweep = compose_sweep(
        sweep_file, config, grid=grid, zip_axes=zip_axes, sets=sets, name=name,
        on_error=on_error.value if on_error is not None else None,
    )
    points = expand(sweep)
    if not dry_run:  # every distinct component of every point, before the first point runs
        from moduseg_core.contract.kinds import KINDS
        from moduseg_core.doctor.run import preflight

        preflight([point.config for point in points], KINDS)
    out = out or Path("runs") / "ablate" / sweep.name
    output = None if dry_run else prepare(out, "ablate", overwrite=overwrite)
    typer.echo(f"sweep {sweep.name!r}: {len(points)} point(s) over {', '.join(sweep.axes) or 'no axes'}", err=True)
    if dry_run:
        for point in points:
            typer.echo(f"  {point.index:3d}  {point.label}")
        return 0
    cache = None if no_cache else _cache(cache_dir)
    reports, summary = run_sweep(
        sweep, out, cache=cache, on_point=lambda report: typer.echo(point_line(report, len(points))), output=output,
        executor=sweep.base.executor,
    )
    if any(r.get("oracle") for r in reports):
        typer.secho(
            "NOTE: labeler 'gt' is the ORACLE (ground-truth masks); these mIoUs are upper bounds.",
            fg="yellow",
            err=True,
        )
    typer.echo(summary_line(reports, summary, cache is not None))
    typer.echo(f"results: {out / 'results.md'} (csv, json, plots/)")
    if (out / "report.html").is_file():
        typer.echo(f"page: {out / 'report.html'} (open it in a browser)")
    return exit_code(sum(r.get("skipped", 0) for r in reports))


cache_app = typer.Typer(help="The stage cache of `moduseg ablate`: list, size, prune.", no_args_is_help=True)


@cache_app.command("list")
def cache_list(
    stage: Annotated[str | None, typer.Option("--stage", help="List this stage's entries one by one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Stages with their entry counts, sizes and ages; with --stage, every entry."""
    from moduseg_core.cache.listing import list_text

    typer.echo(list_text(_cache(cache_dir), stage, as_json=as_json))


@cache_app.command("size")
def cache_size(
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Total size of the stage cache (or of one stage)."""
    from moduseg_core.cache.listing import size_text

    typer.echo(size_text(_cache(cache_dir), stage))


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Delete entries not used for this many days.")
    ] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Delete every entry (of --stage, or of all stages).")
    ] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Delete cache entries by age (--older-than DAYS) or all of them (--all)."""
    from moduseg_core.cache.listing import prune_text

    typer.echo(prune_text(_cache(cache_dir), older_than=older_than, stage=stage, everything=everything))
